"""Train a face embedding by identity classification or the angular prototypical loss (reports 001 and 003).

Who trains and what is evaluated: :func:`kerasface.data.splits.resolve_identity_split`
(on LFW the people of the chosen ``pairs.txt`` folds train and the pairs of the
held-out fold, never trained on, give the verification EER and accuracy). Of
every training identity with at least ``val_min_images`` images,
``val_fraction`` of its images are held out
(:func:`~kerasface.data.splits.split_heldout`): the classification accuracy
(report 003's validation) is measured on them.

Objectives (:class:`~kerasface.config.ClassifyExperiment`):

* ``"margin"``: backbone -> :class:`~kerasface.models.MarginHead` (plain
  softmax, AM-softmax / CosFace, ArcFace) over the training identities,
  sparse cross entropy. Each epoch takes at most ``max_per_identity`` images
  of every identity (:func:`~kerasface.data.sampling.capped_epoch_rows`; report
  001: 200). ``val_accuracy`` is the argmax of the *margin-free* logits of the
  held-out images (what identification sees), ``val_loss`` the training
  objective (with the margin) on them.
* ``"distillation"`` (formerly ``"report002"``): backbone -> Dense classifier inside
  :class:`~kerasface.models.DistillationModel`, whose loss is the preset's sum of
  cross entropy, centre loss, pre-logit norm, batch-hard triplet (then the
  batches are N identities x M images), hard instance mining, and with
  ``teacher`` (a report-002 run folder, frozen) embedding L2 and soft cross
  entropy; each term is logged as ``loss_<term>``. With ``embedding_teacher``
  (a pretrained name, ``.keras`` file or run folder, frozen) the
  ``embedding_distill`` term regresses the student's unit embedding onto the
  teacher's: the teacher embeds every training and held-out image once, on its
  own chips (``teacher_data``, the same relative paths as ``data``), and with
  ``flip`` also their mirrors; the values are cached in the run folder
  (:mod:`kerasface.training.teacher_cache`) and each batch carries them as
  ``x["teacher_embedding"]``, so a step runs only the student. When the
  student's embedding size differs from the teacher's, a bias-free
  ``Dense(teacher size)`` (``distill_projection``) is appended to the student's
  embedding model: ``model.keras`` gives the projected, distilled embedding.
  ``val_teacher_cosine`` (each epoch) is the mean cosine between the student's
  and the teacher's embeddings of the held-out images.
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
(threaded) and never held whole (:class:`~kerasface.training.tasks.classify_data.ImageStore`).
Augmentations run in ``tf.data`` on each batch (seeded per batch). With
``augment_fixed_set`` (report 003) an epoch is the fixed 6x set: every capped
training image once as it is and once through each of the report's five
transforms (:func:`~kerasface.data.sampling.expanded_epoch`), so it has six
times the steps.

Run folder (as the other trainers, :mod:`kerasface.training.runner`): ``config.json``,
``data_report.json``, ``train_identities.txt`` (line ``k``: the identity of class ``k``),
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
from pathlib import Path

import keras
import numpy as np

from kerasface.config import ClassifyExperiment
from kerasface.data.locations import data_location
from kerasface.data.sources import open_image_source
from kerasface.data.splits import resolve_identity_split, split_heldout, write_pairs_list
from kerasface.evaluation.plots import plot_history
from kerasface.io import write_json
from kerasface.losses import AngularPrototypicalLogits
from kerasface.models import (
    BACKBONES,
    DistillationModel,
    MarginHead,
    build_backbone,
    stack_embedding_layers,
    with_projection,
)
from kerasface.training.callbacks import HeldOutAccuracy, HeldOutTeacherCosine, LogLearningRate
from kerasface.training.distribute import Runtime
from kerasface.training.init_from import init_model_for, load_init_model
from kerasface.training.optim import GradualUnfreezing, cosine_warm_restarts, freeze_first, make_optimizer
from kerasface.training.run_folder import RunResult
from kerasface.training.runner import Task, Verification, run_training
from kerasface.training.tasks.classify_data import ImageStore, batch_plan, train_dataset
from kerasface.training.teacher_cache import centred_targets, load_embedding_teacher, teacher_embeddings

logger = logging.getLogger("kerasface.training")

__all__ = ["ClassifyTask", "load_teacher", "build_training_model", "stage_blocks",
           "train_classifier"]


# --------------------------------------------------------------------------- models
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
    return keras.saving.load_model(f, compile=False)


def build_training_model(cfg: ClassifyExperiment, num_classes: int, backbone: keras.Model | None = None,
                         teacher: keras.Model | None = None, teacher_embedding_dim: int | None = None):
    """``(train_model, backbone, head)``; ``head`` is the MarginHead (margin), the angproto logits layer or the
    Dense classifier of a :class:`~kerasface.models.DistillationModel` (objective distillation).

    ``teacher_embedding_dim``: the size of the cached teacher embeddings of an ``embedding_teacher``; a
    student of another size gets the projection of :func:`~kerasface.models.embedding_layers.with_projection`
    (part of its embedding model).
    The training graph uses the backbone's own layers (not a nested copy), so
    freezing / unfreezing a backbone layer acts on both.
    """
    if backbone is None:
        extra = {} if cfg.bn_momentum is None else {"bn_momentum": cfg.bn_momentum}
        if cfg.dropout is not None and getattr(BACKBONES.get(cfg.backbone), "accepts_dropout", False):
            extra["dropout"] = cfg.dropout
        elif cfg.dropout:  # 0: nothing to drop, so a backbone without a dropout layer is fine
            raise ValueError(f"--dropout: backbone {cfg.backbone} has no dropout on its pooled features "
                             "(sqnxt23v5*, inception_resnet_v1* have)")
        if cfg.pretrained:
            if not getattr(BACKBONES.get(cfg.backbone), "accepts_weights", False):
                raise ValueError(f"--pretrained {cfg.pretrained}: backbone {cfg.backbone} has no keras.applications "
                                 "weights (resnet50, efficientnet_b0 and efficientnet_v2_m have)")
            extra["weights"] = cfg.pretrained
        backbone = build_backbone(cfg.backbone, input_shape=(cfg.image_size, cfg.image_size, 3), **extra)
        backbone = stack_embedding_layers(backbone, cfg.embedding_layers)
    elif cfg.dropout is not None:  # --init-from: the given rate replaces the saved one
        drops = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Dropout)]
        if cfg.dropout and not drops:
            raise ValueError(f"--dropout: the --init-from model {backbone.name} has no dropout layer")
        for layer in drops:
            layer.rate = float(cfg.dropout)
    if teacher_embedding_dim is not None:
        backbone = with_projection(backbone, teacher_embedding_dim, always=cfg.distill_projection == "always")
    side = backbone.inputs[0].shape[1]
    if side is not None and side != cfg.image_size:
        raise ValueError(f"the backbone takes {side}x{side} images but image_size is {cfg.image_size}")
    image = backbone.inputs[0]
    emb = backbone.outputs[0]
    if cfg.objective == "angproto":
        head = AngularPrototypicalLogits(num_per_class=cfg.m_images, name="angproto")
        model = keras.Model(image, head(emb), name=f"{backbone.name}_angproto")
    elif cfg.objective == "distillation":
        model = DistillationModel(
            backbone, num_classes, teacher=teacher, ce_weight=cfg.ce_weight, center_weight=cfg.center_weight,
            center_alpha=cfg.center_alpha, prelogit_norm_weight=cfg.prelogit_norm_weight,
            triplet_weight=cfg.triplet_weight, triplet_margin=cfg.triplet_margin,
            hard_mining_fraction=cfg.hard_mining_fraction, embedding_l2_weight=cfg.embedding_l2_weight,
            soft_ce_weight=cfg.soft_ce_weight, hard_ce_weight=cfg.hard_ce_weight, temperature=cfg.temperature,
            embedding_distill_weight=cfg.embedding_distill_weight or 0.0,
            embedding_distill_metric=cfg.embedding_distill_metric or "cosine",
            teacher_embedding_dim=teacher_embedding_dim,
            hard_mining_threshold=cfg.hard_mining_threshold, center_update=cfg.center_update,
            triplet_embedding_dim=cfg.triplet_embedding_dim, triplet_normalize=cfg.triplet_normalize,
            triplet_average=cfg.triplet_average, soft_ce_kind=cfg.soft_ce_kind,
            projected_soft_ce_weight=cfg.projected_soft_ce_weight, embedding_l2_reduction=cfg.embedding_l2_reduction,
            projection_bias=cfg.projection_bias, loss_sum=cfg.loss_sum,
            name=f"{backbone.name}_distillation")
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


# --------------------------------------------------------------------------- the task
class ClassifyTask(Task):
    """Identity classification (margin heads, the summed report-002 objective) or angular prototypical
    batches over the training identities; verification on the held-out people's pairs."""

    def __init__(self, cfg: ClassifyExperiment):
        self.cfg = cfg
        self.title = f"{cfg.name} ({cfg.backbone}, {cfg.objective})"

    def settings(self) -> dict:
        cfg = self.cfg
        self.data_path = data_location(cfg.data)
        self.init_model = load_init_model(cfg.init_from) if cfg.init_from else None
        if not cfg.init_from and cfg.objective == "angproto":
            logger.warning("angproto without --init-from: the backbone starts from random weights "
                           "(report 001 fine-tunes an AM-softmax pretraining)")
        self.split = resolve_identity_split(cfg, self.data_path)
        # angproto has no class weights to classify with: its validation is the EER on the evaluation pairs.
        fraction = cfg.val_fraction if cfg.objective != "angproto" else 0.0
        self.train_rows, self.val_rows = split_heldout(self.split.train.labels, fraction, cfg.val_min_images,
                                                       cfg.seed)
        return cfg.to_dict() | {"data": str(self.data_path)}

    def prepare(self, run_dir: Path, verbose, runtime: Runtime) -> None:
        cfg, split, index = self.cfg, self.split, self.split.train
        self.runtime = runtime
        (run_dir / "train_identities.txt").write_text("\n".join(index.names) + "\n")
        if split.eval_pairs and not write_pairs_list(split.eval_pairs, run_dir / "eval_pairs.txt"):
            logger.info("evaluation pairs do not fit the LFW list format; eval_pairs.txt not written")
        self.store = store = ImageStore(index, np.concatenate([self.train_rows, self.val_rows]), cfg.image_size,
                                        cfg.center_crop, cfg.cache_mb, cfg.on_error, progress=verbose != 0)
        if len(store.bad_rows):
            self.train_rows = self.train_rows[~np.isin(self.train_rows, store.bad_rows)]
            self.val_rows = self.val_rows[~np.isin(self.val_rows, store.bad_rows)]
        self.teacher_train = self.teacher_heldout = None
        if cfg.embedding_teacher:
            self._prepare_teacher(run_dir)
        train_rows, val_rows = self.train_rows, self.val_rows
        self.labels = np.asarray(index.labels[train_rows], np.int32)
        # The held-out images (line i: label = line number of its identity in train_identities.txt, path).
        (run_dir / "heldout_images.txt").write_text(
            "".join(f"{int(index.labels[r])}\t{index.path(int(r))}\n" for r in val_rows.tolist()))
        self.plan0 = plan0 = batch_plan(cfg, self.labels, 0)[0]
        if len(plan0) == 0:
            need = (f"{cfg.identities_per_batch} identities with >= {cfg.min_images} images"
                    if cfg.objective == "angproto" else f"{cfg.batch_size} images")
            raise ValueError(f"no full batch: {len(train_rows)} training images of {index.num_identities} "
                             f"identities; a batch needs {need} (lower --batch-size)")
        report = dict(split.report)
        report["train"] = dict(report["train"], images=int(len(train_rows)), images_per_epoch=int(plan0.size),
                               steps_per_epoch=len(plan0), augment_fixed_set=bool(cfg.augment_fixed_set))
        report["heldout"] = {"images": int(len(val_rows)), "identities": int(len(np.unique(index.labels[val_rows]))),
                             "fraction": cfg.val_fraction, "min_images": cfg.val_min_images}
        report["decode"] = {"in_memory": store.in_memory, **store.stats}
        if self.teacher_train is not None:
            report["teacher"] = self.teacher_report
        self.data_report = report
        write_json(run_dir / "data_report.json", report)

    def _prepare_teacher(self, run_dir: Path) -> None:
        """The embedding teacher's (cached) embeddings of the training and held-out images: ``teacher_train``
        ``[train rows, views, D]`` and ``teacher_heldout`` ``[held-out rows, D]`` (views of one array, in the
        order of ``train_rows`` and ``val_rows``); images whose teacher chip is missing leave training."""
        cfg, index = self.cfg, self.split.train
        self.embedding_teacher = teacher = load_embedding_teacher(cfg.embedding_teacher)
        chips = cfg.teacher_data or self.data_path
        if cfg.teacher_data and not Path(cfg.teacher_data).expanduser().exists():
            raise FileNotFoundError(f"--teacher-data {cfg.teacher_data}: not found (the teacher's own face chips of "
                                    "--data's images, e.g. `kerasface align SRC DST --template dlib --size 150`)")
        rows = np.concatenate([self.train_rows, self.val_rows])
        values, ok, stats = teacher_embeddings(teacher, index.paths(rows), chips, cache_dir=run_dir,
                                               mirrors=bool(cfg.flip), center_crop=1.0 if cfg.teacher_data
                                               else cfg.center_crop, on_error=cfg.on_error)
        if not ok.all():
            bad = rows[~ok]
            logger.warning("%d images have no teacher chip in %s (e.g. %s): left out", len(bad), chips,
                           index.path(int(bad[0])))
            n_train = len(self.train_rows)
            self.train_rows, self.val_rows = self.train_rows[ok[:n_train]], self.val_rows[ok[n_train:]]
            values = values[ok]  # the one copy, and only when a chip is missing
        centring = {}
        if cfg.embedding_distill_center:
            values, mean = centred_targets(values, len(self.train_rows))
            centring = {"targets_centred_on_mean_of_norm": round(float(np.linalg.norm(mean)), 4)}
        self.teacher_train = values[:len(self.train_rows)]
        self.teacher_heldout = values[len(self.train_rows):, 0]
        self.teacher_report = {"model": teacher.name, "weights_fingerprint": teacher.fingerprint,
                               "embedding_dim": teacher.dim, "image_size": list(teacher.spec.image_size),
                               "alignment": teacher.spec.alignment, "chips": str(chips),
                               "views": int(values.shape[1]), **centring, **stats}

    def build(self, runtime: Runtime) -> keras.Model:
        cfg = self.cfg
        init_model = None if self.init_model is None else init_model_for(self.init_model, runtime)
        teacher = load_teacher(cfg.teacher, self.split.train.names) if cfg.teacher else None
        t_dim = self.embedding_teacher.dim if self.teacher_train is not None else None
        model, self.backbone, self.head = build_training_model(cfg, self.split.train.num_identities,
                                                               backbone=init_model, teacher=teacher,
                                                               teacher_embedding_dim=t_dim)
        if cfg.freeze_first:
            frozen = freeze_first(self.backbone, cfg.freeze_first)
            logger.info("froze the first %d backbone layers (%s ... %s)", len(frozen), frozen[0], frozen[-1])
        schedule = None
        if cfg.schedule == "cosine_restarts":
            schedule = cosine_warm_restarts(cfg.learning_rate, len(self.plan0), cfg.cycle_epochs, cfg.min_lr)
        elif cfg.schedule == "exponential_staircase":
            schedule = keras.optimizers.schedules.ExponentialDecay(cfg.learning_rate, cfg.decay_steps,
                                                                   cfg.decay_rate, staircase=True)
        optimizer = make_optimizer(cfg.optimizer, cfg.learning_rate, weight_decay=cfg.weight_decay, schedule=schedule)
        # pure embedding distillation trains no classifier: its accuracy would mean nothing
        self.uses_classifier = not isinstance(model, DistillationModel) or model.trains_classifier
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if self.uses_classifier else []
        # distillation: its compute_loss sums the preset's terms (each logged as loss_<term>)
        loss = None if cfg.objective == "distillation" else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, **runtime.compile_kwargs())
        # classifier.keras: the trained head (none for angproto; none for pure embedding distillation, whose
        # classifier is never trained)
        self.models = {"model.keras": self.backbone} | ({"classifier.keras": model}
                                                        if cfg.objective != "angproto" and self.uses_classifier
                                                        else {})
        return model

    def callbacks(self) -> list:
        cfg, index = self.cfg, self.split.train
        out = [LogLearningRate()]
        if cfg.objective != "angproto" and len(self.val_rows) and self.uses_classifier:
            out.append(HeldOutAccuracy(self.backbone, self.head, self.store.get(self.val_rows),
                                       index.labels[self.val_rows]))
        if self.teacher_heldout is not None and len(self.val_rows):
            out.append(HeldOutTeacherCosine(self.backbone, self.store.get(self.val_rows), self.teacher_heldout))
        if cfg.unfreeze_every:
            blocks = stage_blocks(self.backbone) + [[self.head.name]]
            out.append(GradualUnfreezing(blocks=blocks, every=cfg.unfreeze_every, head=2, verbose=1))
        return out

    def verification(self) -> Verification:
        split = self.split
        if not hasattr(self, "source"):
            self.source = open_image_source(self.data_path)
        return Verification(self.source, split.eval_pairs, title=f"{self.cfg.name}: {split.eval_source}",
                            model=self.backbone, heldout_folds=10,
                            score_kwargs={"center_crop": self.cfg.center_crop})

    def fit_arguments(self, first_epoch: int) -> dict:
        cfg, plan0 = self.cfg, self.plan0
        logger.info("%s: %d classes, %d training images (%d a epoch, %d steps of %d), %d held-out images, "
                    "%d evaluation pairs", cfg.name, self.split.train.num_identities, len(self.train_rows),
                    plan0.size, len(plan0), plan0.shape[1], len(self.val_rows), len(self.split.eval_pairs))
        ds = train_dataset(cfg, self.store, self.train_rows, self.labels, start_epoch=first_epoch,
                           teacher=self.teacher_train)
        return {"x": self.runtime.shard(ds, source="generator"), "steps_per_epoch": len(plan0)}

    def plot(self, history: dict, path) -> None:
        plot_history(history, path, title=self.title)  # CURVE_PANELS: the panel order of every trainer

    def summary(self, h: dict, epoch_seconds: list, complete: bool) -> dict:
        later = epoch_seconds[1:] or epoch_seconds
        per_epoch = sum(later) / len(later)
        images = int(self.plan0.size)
        out = {"preset": self.cfg.name, "complete": complete, "epochs_run": len(epoch_seconds),
               "epochs_planned": self.cfg.epochs, "final": {k: v[-1] for k, v in h.items()},
               "classes": self.split.train.num_identities, "train_images": int(len(self.train_rows)),
               "heldout_images": int(len(self.val_rows)), "images_per_epoch": images,
               "epoch_seconds": epoch_seconds, "seconds_per_epoch": per_epoch,
               "train_images_per_second": images / per_epoch}
        for key, better in (("val_accuracy", max), ("val_teacher_cosine", max), ("verify_eer", min),
                            ("verify_accuracy", max)):
            col = [(v, i) for i, v in enumerate(h.get(key, [])) if not math.isnan(v)]
            if col:
                v, i = better(col)
                out[f"best_{key}"], out[f"best_{key}_epoch"] = v, i + 1
        return out

    def report(self, metrics: dict, model, run) -> dict:
        metrics["wall_seconds_this_session"] = run.fit_seconds
        metrics["data"] = self.data_report
        return metrics

    def result(self, run_dir: Path, metrics: dict, model) -> RunResult:
        return RunResult(run_dir=run_dir, metrics=metrics, model=self.backbone)

    def close(self) -> None:
        self.store.close()


def train_classifier(cfg: ClassifyExperiment, run_dir: Path | None = None, verbose="auto",
                     runtime: Runtime | None = None, run_name: str | None = None) -> RunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics.

    ``runtime``: strategy, mixed precision, XLA (default: one device, float32);
    ``batch_size`` is the global batch (split between the replicas). ``run_name``: the new run folder's
    name before its time stamp (default ``cfg.name``).
    """
    return run_training(ClassifyTask(cfg), run_dir, verbose, runtime, run_name)
