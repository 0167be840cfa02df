"""Train a face embedding by identity classification or the angular prototypical loss (reports 001 and 003).

Who trains and what is evaluated follows the triplet trainer
(:func:`kerasface.training.triplet.resolve_triplet_data`): on LFW the people
of the chosen ``pairs.txt`` folds train and the pairs of the held-out fold
(never trained on) give the verification EER and accuracy. Of every training
identity with at least ``val_min_images`` images, ``val_fraction`` of its
images are held out: the classification accuracy (report 003's validation) is
measured on them.

Objectives (:class:`~kerasface.config.ClassifyExperiment`):

* ``"margin"``: backbone -> :class:`~kerasface.models.MarginHead` (plain
  softmax, AM-softmax / CosFace, ArcFace) over the training identities,
  sparse cross entropy. Each epoch takes at most ``max_per_identity`` images
  of every identity (:func:`~kerasface.data.sampling.capped_epoch_rows`; report
  001: 200). ``val_accuracy`` is the argmax of the *margin-free* logits of the
  held-out images (what identification sees), ``val_loss`` the training
  objective (with the margin) on them.
* ``"distillation"`` (formerly ``"report002"``): backbone -> Dense classifier inside
  :class:`~kerasface.models.Report002Model`, whose loss is the preset's sum of
  cross entropy, centre loss, pre-logit norm, batch-hard triplet (then the
  batches are N identities x M images), hard instance mining, and with
  ``teacher`` (a report-002 run folder, frozen) embedding L2 and soft cross
  entropy; each term is logged as ``loss_<term>``.
* ``"angproto"``: batches of ``N = batch_size // m_images`` identities x
  ``M = m_images`` images (:func:`~kerasface.data.sampling.pk_plan`), the
  angular prototypical loss with its learnable scale and bias
  (:class:`~kerasface.losses.AngularPrototypicalLogits`). ``accuracy`` is the
  fraction of queries closest to their own prototype. An epoch is as many
  batches as the first epoch's plan holds (plans of later epochs differ by a
  batch or so; the batch stream simply continues).

``init_from`` (a run folder or a ``.keras`` file) starts the backbone from a
saved embedding model: report 001 fine-tunes its AM-softmax pretraining with
the angular prototypical loss.

Images are decoded once into memory (uint8) when the training and held-out
images fit in ``cache_mb``; larger sets are read and decoded batch by batch
(threaded) and never held whole. Augmentations run in ``tf.data`` on each
batch (seeded per batch).

Run folder (as the other trainers): ``config.json``, ``data_report.json``,
``train_identities.txt`` (line ``k``: the identity of class ``k``),
``heldout_images.txt`` (``label<TAB>path``), ``eval_pairs.txt``, ``history.json`` /
``history.csv``, ``curves.png``, ``model.keras`` (the embedding model: images
-> embedding), ``classifier.keras`` (margin objectives: ``[image, label] ->
logits``), ``metrics.json`` (with ``"verification"`` on the evaluation pairs),
``roc.png``, ``cases.png``. A killed run resumes with the same command and
``--run-dir``; a NaN loss stops it with the last good epoch kept.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.data.augment import make_augment
from kerasface.data.images import ImageDecoder
from kerasface.data.sampling import pk_plan
from kerasface.data.lfw import open_image_source
from kerasface.data.sampling import capped_epoch_rows
from kerasface.evaluation.plots import plot_history
from kerasface.evaluation.verification import evaluate_pairs, heldout_accuracy, write_report
from kerasface.config import ClassifyExperiment
from kerasface.data.locations import data_location
from kerasface.io import jsonable, write_json
from kerasface.losses import AngularPrototypicalLogits
from kerasface.models import MarginHead, Report002Model, build_backbone
from kerasface.ops import normalize_faces
from kerasface.training.callbacks import RunBackup, StopOnNaN, VerificationCallback
from kerasface.training.distribute import Runtime, resume_epochs, worker_run
from kerasface.training.optim import GradualUnfreezing, cosine_warm_restarts, freeze_first, make_optimizer
from kerasface.training.run_folder import RunFolderWriter, RunResult, new_run_dir
from kerasface.training.triplet import resolve_triplet_data, write_pairs_list

logger = logging.getLogger("kerasface.training")

__all__ = ["split_heldout", "ImageStore", "HeldOutAccuracy", "load_init_model", "build_training_model",
           "stage_blocks", "train_classifier"]


# --------------------------------------------------------------------------- data
def split_heldout(labels: np.ndarray, fraction: float, min_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, val_rows)`` of an identity-grouped label array.

    Every identity with at least ``min_images`` images gives
    ``max(1, round(fraction * count))`` randomly chosen images (seeded) to
    validation; the others keep all their images for training. ``fraction=0``:
    no validation images.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 31]))
    train, val = [], []
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    for st, c in zip(starts.tolist(), counts.tolist()):
        rows = order[st:st + c]
        if fraction > 0 and c >= min_images:
            k = min(c - 1, max(1, int(round(fraction * c))))
            pick = rng.permutation(c)[:k]
            mask = np.zeros(c, bool)
            mask[pick] = True
            val.append(rows[mask])
            train.append(rows[~mask])
        else:
            train.append(rows)
    cat = lambda parts: np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(train), cat(val)


class ImageStore:
    """uint8 faces of given index rows: decoded once into memory when they fit, else on demand.

    ``get(rows)`` returns ``[n, s, s, 3]``. In memory, rows that could not be
    read or decoded are listed in ``bad_rows`` (the caller drops them); on
    demand they come back black and are counted in ``stats``.
    """

    def __init__(self, index, rows: np.ndarray, image_size: int, center_crop: float, cache_mb: float,
                 on_error: str = "skip", progress: bool = True):
        self.decoder = ImageDecoder(index, image_size, center_crop, None, "raise" if on_error == "error" else "skip")
        self.size = int(image_size)
        rows = np.unique(np.asarray(rows, np.int64))
        need_mb = len(rows) * self.size * self.size * 3 / 2**20
        self.in_memory = need_mb <= cache_mb
        self.bad_rows = np.zeros(0, np.int64)
        self._rows = rows  # sorted: a row's position in memory is np.searchsorted(self._rows, row)
        if self.in_memory:
            from kerasface.data.images import TextProgress

            self._images = np.empty((len(rows), self.size, self.size, 3), np.uint8)
            ok = np.ones(len(rows), bool)
            bar = TextProgress(len(rows), "decoding faces", enabled=progress)
            step = 512
            for b in range(0, len(rows), step):
                imgs, good = self.decoder.decode(rows[b:b + step])
                self._images[b:b + step] = imgs
                ok[b:b + step] = good
                bar.update(min(b + step, len(rows)))
            self.bad_rows = rows[~ok]
        logger.info("%d faces at %dx%d (%.0f MB): %s", len(rows), self.size, self.size, need_mb,
                    "decoded into memory" if self.in_memory else f"read on demand (over cache_mb={cache_mb:g})")

    def get(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if self.in_memory:
            return self._images[np.searchsorted(self._rows, rows)]
        return self.decoder.decode(rows)[0]

    @property
    def stats(self) -> dict:
        return self.decoder.stats.as_dict()

    def close(self) -> None:
        self.decoder.close()


def _batch_plan(cfg: ClassifyExperiment, labels: np.ndarray, epoch: int) -> np.ndarray:
    """``[batches, batch]`` positions into the training rows for one epoch."""
    if cfg.identity_batches:
        return pk_plan(labels, cfg.identities_per_batch, cfg.m_images, epoch=epoch, seed=cfg.seed,
                       short="replace", min_images=cfg.min_images)
    pos = capped_epoch_rows(labels, cfg.max_per_identity, seed=cfg.seed, epoch=epoch)
    n = len(pos) // cfg.batch_size
    return pos[:n * cfg.batch_size].reshape(n, cfg.batch_size)


def _train_dataset(cfg: ClassifyExperiment, store: ImageStore, rows: np.ndarray, labels: np.ndarray,
                   start_epoch: int) -> tf.data.Dataset:
    """Endless batches from epoch ``start_epoch`` on: margin ``((x, y), y)``, angproto ``(x, arange(N))``."""
    s = store.size

    def gen():
        e = start_epoch
        while True:
            plan = _batch_plan(cfg, labels, e)
            if not len(plan):
                raise RuntimeError(f"epoch {e} has no full batch")
            for b in plan:
                yield store.get(rows[b]), labels[b].astype(np.int32)
            e += 1

    n = cfg.identities_per_batch * cfg.m_images if cfg.identity_batches else cfg.batch_size
    sig = (tf.TensorSpec((n, s, s, 3), tf.uint8), tf.TensorSpec((n,), tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    policy = make_augment(cfg.augment)
    rnd = tf.data.Dataset.random(seed=cfg.seed + 1000 * start_epoch, rerandomize_each_iteration=False)

    if cfg.objective == "angproto":
        target = tf.range(cfg.identities_per_batch, dtype=tf.int32)

        def fmt(pair, r):
            x, _ = pair
            return normalize_faces(policy(x, r)), target
    elif cfg.objective == "distillation":
        def fmt(pair, r):
            x, y = pair
            return {"image": normalize_faces(policy(x, r)), "label": y}, y
    else:
        def fmt(pair, r):
            x, y = pair
            return (normalize_faces(policy(x, r)), y), y

    ds = tf.data.Dataset.zip((ds, rnd)).map(fmt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


# --------------------------------------------------------------------------- models
def load_init_model(path) -> keras.Model:
    """The embedding model of a run folder (its ``model.keras``) or of a ``.keras`` file."""
    p = Path(path)
    f = p / "model.keras" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"--init-from {path}: no model.keras there (a run folder of `kerasface train`, "
                                "or a .keras embedding model)")
    import kerasface  # noqa: F401  (registers the custom layers)

    model = keras.saving.load_model(f, compile=False)
    if len(model.inputs) != 1:
        from kerasface.evaluation.embeddings import embedding_submodel

        model = embedding_submodel(model)
    return model


def load_teacher(path, train_names: list[str]) -> keras.Model:
    """The frozen teacher of a report-002 run folder (its ``classifier.keras``), checked to have been trained
    on the same identities in the same order (its ``train_identities.txt``)."""
    p = Path(path)
    f = p / "classifier.keras" if p.is_dir() else p
    if str(path) == "REQUIRED" or not f.is_file():
        raise FileNotFoundError(f"--teacher {path}: no classifier.keras there; pass the run folder of a teacher "
                                "run (e.g. `kerasface train --preset incres-teacher ...`)")
    names_file = f.parent / "train_identities.txt"
    if names_file.is_file():
        names = [ln for ln in names_file.read_text().split("\n") if ln]
        if names != list(train_names):
            raise ValueError(f"--teacher {path} was trained on {len(names)} identities, this run has "
                             f"{len(train_names)} (or another order): use the same --data / folds / --min-images")
    import kerasface  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(f, compile=False)


def build_training_model(cfg: ClassifyExperiment, num_classes: int, backbone: keras.Model | None = None,
                         teacher: keras.Model | None = None):
    """``(train_model, backbone, head)``; ``head`` is the MarginHead (margin), the angproto logits layer or the
    Dense classifier of a :class:`~kerasface.models.Report002Model` (report002).

    The training graph uses the backbone's own layers (not a nested copy), so
    freezing / unfreezing a backbone layer acts on both.
    """
    if backbone is None:
        extra = {} if cfg.bn_momentum is None else {"bn_momentum": cfg.bn_momentum}
        backbone = build_backbone(cfg.backbone, input_shape=(cfg.image_size, cfg.image_size, 3), **extra)
    side = backbone.inputs[0].shape[1]
    if side is not None and side != cfg.image_size:
        raise ValueError(f"the backbone takes {side}x{side} images but image_size is {cfg.image_size}")
    image = backbone.inputs[0]
    emb = backbone.outputs[0]
    if cfg.objective == "angproto":
        head = AngularPrototypicalLogits(num_per_class=cfg.m_images, name="angproto")
        model = keras.Model(image, head(emb), name=f"{backbone.name}_angproto")
    elif cfg.objective == "distillation":
        model = Report002Model(
            backbone, num_classes, teacher=teacher, ce_weight=cfg.ce_weight, center_weight=cfg.center_weight,
            center_alpha=cfg.center_alpha, prelogit_norm_weight=cfg.prelogit_norm_weight,
            triplet_weight=cfg.triplet_weight, triplet_margin=cfg.triplet_margin,
            hard_mining_fraction=cfg.hard_mining_fraction, embedding_l2_weight=cfg.embedding_l2_weight,
            soft_ce_weight=cfg.soft_ce_weight, hard_ce_weight=cfg.hard_ce_weight, temperature=cfg.temperature,
            name=f"{backbone.name}_report002")
        head = model.classifier
    else:
        head = MarginHead(num_classes, kind=cfg.head, scale=cfg.scale, margin=cfg.margin,
                          easy_margin=cfg.easy_margin, name="margin_head")
        label = keras.Input(shape=(), dtype="int32", name="label")
        model = keras.Model([image, label], head(emb, labels=label), name=f"{backbone.name}_{cfg.head}")
    return model, backbone, head


def stage_blocks(backbone: keras.Model) -> list[list[str]]:
    """Layer names of the backbone grouped into consecutive blocks by their first name token
    (``stem``, ``stage1``, ``stage2``, ..., ``embedding``): the units of gradual unfreezing."""
    blocks: list[list[str]] = []
    last = None
    for layer in backbone.layers:
        if not layer.weights:
            continue
        key = layer.name.split("_")[0]
        if key != last:
            blocks.append([])
            last = key
        blocks[-1].append(layer.name)
    return blocks


class _LogLearningRate(keras.callbacks.Callback):
    """``learning_rate`` (the schedule's value at the end of the epoch) into the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class HeldOutAccuracy(keras.callbacks.Callback):
    """``val_accuracy`` (argmax of the margin-free logits) and ``val_loss`` (cross entropy of the logits with
    the margin, i.e. the margin objective) of held-out images of the training identities, after every epoch.
    ``head``: a :class:`MarginHead` or a plain classifier layer (embedding -> logits)."""

    def __init__(self, backbone: keras.Model, head, images: np.ndarray, labels: np.ndarray,
                 batch_size: int = 64):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.images, self.labels = images, np.asarray(labels, np.int32)
        self.batch_size = batch_size

    def evaluate(self) -> dict:
        emb = []
        for b in range(0, len(self.images), self.batch_size):
            x = normalize_faces(self.images[b:b + self.batch_size])
            emb.append(keras.ops.convert_to_numpy(self.backbone(x, training=False)))
        e = np.concatenate(emb)
        plain = keras.ops.convert_to_numpy(self.head(e))
        with_margin = (keras.ops.convert_to_numpy(self.head(e, labels=self.labels))
                       if isinstance(self.head, MarginHead) else plain)
        z = with_margin - with_margin.max(axis=1, keepdims=True)
        ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), self.labels]
        return {"val_accuracy": float((plain.argmax(axis=1) == self.labels).mean()), "val_loss": float(ce.mean())}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and len(self.images):
            logs.update(self.evaluate())


def _plot(history: dict, path, title: str) -> None:
    keys = [k for k in ("loss", "accuracy", "verify_eer", "verify_accuracy") if k in history]
    plot_history(history, path, title=title, metrics=tuple(keys))


# --------------------------------------------------------------------------- training
def train_classifier(cfg: ClassifyExperiment, run_dir: Path | None = None, verbose="auto",
                     runtime: Runtime | None = None) -> RunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics.

    ``runtime``: strategy, mixed precision, XLA (default: one device, float32);
    ``batch_size`` is the global batch (split between the replicas).
    """
    runtime = runtime or Runtime()
    with worker_run(runtime, run_dir) as run_dir:  # non-chief workers: a temporary folder
        return _train_classifier(cfg, run_dir, verbose, runtime)


def _train_classifier(cfg: ClassifyExperiment, run_dir, verbose, runtime: Runtime) -> RunResult:
    data_path = data_location(cfg.data)
    init_model = None
    if cfg.init_from:
        init_model = load_init_model(cfg.init_from)
    elif cfg.objective == "angproto":
        logger.warning("angproto without --init-from: the backbone starts from random weights "
                       "(report 001 fine-tunes an AM-softmax pretraining)")
    split = resolve_triplet_data(cfg, data_path)
    index = split.train
    # angproto has no class weights to classify with: its validation is the EER on the evaluation pairs.
    fraction = cfg.val_fraction if cfg.objective != "angproto" else 0.0
    train_rows, val_rows = split_heldout(index.labels, fraction, cfg.val_min_images, cfg.seed)

    resolved = cfg.to_dict() | {"data": str(data_path)}
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.out, cfg.name)
    done_epochs = resume_epochs(runtime, run_dir, resolved)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # "runtime": how this run executes (not compared when resuming: the hardware may change)
        write_json(run_dir / "config.json", resolved | {"runtime": runtime.describe()})
    except OSError as e:
        raise OSError(f"cannot write the run folder {run_dir}: {e.strerror or e}") from None
    (run_dir / "train_identities.txt").write_text("\n".join(index.names) + "\n")
    if split.eval_pairs and not write_pairs_list(split.eval_pairs, run_dir / "eval_pairs.txt"):
        logger.info("evaluation pairs do not fit the LFW list format; eval_pairs.txt not written")
    keras.utils.set_random_seed(cfg.seed)

    store = ImageStore(index, np.concatenate([train_rows, val_rows]), cfg.image_size, cfg.center_crop,
                       cfg.cache_mb, cfg.on_error, progress=verbose != 0)
    if len(store.bad_rows):
        train_rows = train_rows[~np.isin(train_rows, store.bad_rows)]
        val_rows = val_rows[~np.isin(val_rows, store.bad_rows)]
    labels = np.asarray(index.labels[train_rows], np.int32)
    num_classes = index.num_identities
    # The held-out images (line i: label = line number of its identity in train_identities.txt, path).
    (run_dir / "heldout_images.txt").write_text(
        "".join(f"{int(index.labels[r])}\t{index.path(int(r))}\n" for r in val_rows.tolist()))
    plan0 = _batch_plan(cfg, labels, 0)
    steps = len(plan0)
    if steps == 0:
        need = (f"{cfg.identities_per_batch} identities with >= {cfg.min_images} images" if cfg.objective == "angproto"
                else f"{cfg.batch_size} images")
        raise ValueError(f"no full batch: {len(train_rows)} training images of {num_classes} identities; "
                         f"a batch needs {need} (lower --batch-size)")
    report = dict(split.report)
    report["train"] = dict(report["train"], images=int(len(train_rows)), images_per_epoch=int(plan0.size),
                           steps_per_epoch=steps)
    report["heldout"] = {"images": int(len(val_rows)), "identities": int(len(np.unique(index.labels[val_rows]))),
                         "fraction": cfg.val_fraction, "min_images": cfg.val_min_images}
    report["decode"] = {"in_memory": store.in_memory, **store.stats}
    write_json(run_dir / "data_report.json", report)

    with runtime.precision(), runtime.scope():
        if init_model is not None and (runtime.strategy != "default" or runtime.policy_name() != "float32"):
            # the variables must be created inside the strategy scope / dtype policy: clone, copy the weights
            fresh = keras.models.clone_model(init_model)
            fresh.set_weights(init_model.get_weights())
            init_model = fresh
        teacher = load_teacher(cfg.teacher, index.names) if cfg.teacher else None
        model, backbone, head = build_training_model(cfg, num_classes, backbone=init_model, teacher=teacher)
        if cfg.freeze_first:
            frozen = freeze_first(backbone, cfg.freeze_first)
            logger.info("froze the first %d backbone layers (%s ... %s)", len(frozen), frozen[0], frozen[-1])
        schedule = (cosine_warm_restarts(cfg.learning_rate, steps, cfg.cycle_epochs, cfg.min_lr)
                    if cfg.schedule == "cosine_restarts" else None)
        optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay,
                                   schedule=schedule)
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        if cfg.objective == "distillation":  # its compute_loss sums the preset's terms (each logged as loss_<term>)
            model.compile(optimizer=optimizer, metrics=[accuracy], **runtime.compile_kwargs())
        else:
            model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          metrics=[accuracy], **runtime.compile_kwargs())

    source = open_image_source(data_path)
    title = f"{cfg.name} ({cfg.backbone}, {cfg.objective})"
    n_train = int(len(train_rows))

    def summary(h, epoch_seconds, complete):
        later = epoch_seconds[1:] or epoch_seconds
        per_epoch = sum(later) / len(later)
        out = {"preset": cfg.name, "complete": complete, "epochs_run": len(epoch_seconds),
               "epochs_planned": cfg.epochs, "final": {k: v[-1] for k, v in h.items()},
               "classes": num_classes, "train_images": n_train, "heldout_images": int(len(val_rows)),
               "images_per_epoch": int(plan0.size), "epoch_seconds": epoch_seconds,
               "seconds_per_epoch": per_epoch, "train_images_per_second": plan0.size / per_epoch}
        for key, better in (("val_accuracy", max), ("verify_eer", min), ("verify_accuracy", max)):
            col = [(v, i) for i, v in enumerate(h.get(key, [])) if not math.isnan(v)]
            if col:
                v, i = better(col)
                out[f"best_{key}"], out[f"best_{key}_epoch"] = v, i + 1
        return out

    guard = StopOnNaN()
    saved = {"model.keras": backbone} | ({"classifier.keras": model} if cfg.objective != "angproto" else {})
    writer = RunFolderWriter(run_dir, title, summary, models=saved, csv=True, nan_guard=guard,
                             plot=lambda h, p: _plot(h, p, title))
    writer.resume(done_epochs)
    callbacks = [_LogLearningRate()]
    if cfg.objective != "angproto" and len(val_rows):
        callbacks.append(HeldOutAccuracy(backbone, head, store.get(val_rows), index.labels[val_rows]))
    if split.eval_pairs and cfg.verify_every > 0:
        callbacks.append(VerificationCallback(source, split.eval_pairs, every=cfg.verify_every, prefix="verify_",
                                              model=backbone, center_crop=cfg.center_crop))
    if cfg.unfreeze_every:
        blocks = stage_blocks(backbone) + [[head.name]]
        callbacks.append(GradualUnfreezing(blocks=blocks, every=cfg.unfreeze_every, head=2, verbose=1))
    callbacks += [guard, writer, RunBackup(run_dir / "backup", nan_guard=guard)]

    train_ds = runtime.shard(_train_dataset(cfg, store, train_rows, labels, start_epoch=done_epochs),
                             source="generator")
    logger.info("%s: %d classes, %d training images (%d a epoch, %d steps of %d), %d held-out images, "
                "%d evaluation pairs", cfg.name, num_classes, n_train, plan0.size, steps, plan0.shape[1],
                len(val_rows), len(split.eval_pairs))
    t0 = time.perf_counter()
    model.fit(train_ds, epochs=cfg.epochs, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    store.close()
    if guard.tripped:
        stopped = dict(guard.stopped, reason="non-finite loss")
        base = summary(writer.history, writer.epoch_seconds, False) if writer.epoch_seconds else {
            "preset": cfg.name, "complete": False, "epochs_run": 0, "epochs_planned": cfg.epochs}
        write_json(run_dir / "metrics.json", jsonable(base | {"stopped": stopped}))
        raise FloatingPointError(f"{guard.message()}: {run_dir}")
    metrics = summary(writer.history, writer.epoch_seconds, len(writer.epoch_seconds) == cfg.epochs)
    metrics["wall_seconds_this_session"] = time.perf_counter() - t0
    if split.eval_pairs:
        verification = evaluate_pairs(backbone, source, split.eval_pairs, verbose=0, center_crop=cfg.center_crop)
        verification.metrics.update(heldout_accuracy(verification.scores))
        write_report(verification, run_dir, source=source, title=f"{cfg.name}: {split.eval_source}",
                     metrics_file=None)
        metrics["verification"] = verification.metrics
    metrics["data"] = report
    metrics = jsonable(metrics)
    write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir=run_dir, metrics=metrics, model=backbone)
