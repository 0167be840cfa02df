"""Train a triplet-loss face embedding (report 004, the FaceNet monograph) and write its run folder.

Data: an :class:`~kerasface.data.identities.IdentityIndex` of the training
identities (everyone except the people of the evaluation pairs, see
:func:`resolve_triplet_data`), read in chunks (the monograph's "trunks") by
:class:`~kerasface.data.loaders.ChunkedLoader`. Per chunk:

* ``mining="offline"`` (the monograph): embed the chunk with the current
  model, select semi-hard triplets (:func:`kerasface.losses.select_triplets`),
  and fit the three-input :func:`~kerasface.models.TripletModel` on them with
  the stack loss (``hinge_squared`` by default);
* ``mining="batch_hard" | "semi_hard" | "batch_all"``: P x K batches of the
  chunk (:func:`~kerasface.data.pipelines.pk_batches`) into the embedding model
  compiled with that online mining loss.

After every epoch a fixed probe set of training faces is embedded: the mean
pairwise distance (``probe_mean_distance``), the same/different means, the
fraction of the probe's triplets that still have a positive loss
(``probe_active_fraction``) and their mean loss (``probe_loss``) go to the
history, and so does the mean distance of the probe embedded as the training
step sees it (BN on batch statistics: ``probe_train_mean_distance``). That
one below ``collapse_floor`` stops the run: the embeddings collapsed to one
point, the report's failure (distances ~1e-7). (The inference-mode distances
are not used for the test: early in a short run they all sit close together
while the BN moving statistics lag behind, without any collapse.)

Run folder: ``config.json``, ``data_report.json``, ``train_identities.txt``,
``eval_pairs.txt``, ``history.json`` / ``history.csv``, ``curves.png``,
``model.keras`` (the embedding model), ``triplet.keras`` (the three-input
graph), ``metrics.json`` (``"verification"`` on the evaluation pairs,
``"case_study"``), ``roc.png``, ``cases.png`` and ``case_study.png`` (the
hardest positive and negative pairs among the held-out faces).

Hardware (``runtime``, a :class:`~kerasface.training.distribute.Runtime`):
models are built and compiled inside the strategy's scope after the
mixed-precision policy is set (embeddings, distances and losses stay
float32); ``cfg.batch_size`` is the global batch; the ``from_generator``
batches are DATA-sharded across the workers of a multiworker run (every
worker loads the same seeded chunks), and only the chief writes the run folder.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.data.loaders import ChunkedLoader
from kerasface.data.pipelines import embed_images, offline_triplet_dataset, pk_batches
from kerasface.data.sampling import pk_plan
from kerasface.data.identities import IdentityIndex, fold_identities
from kerasface.data.lfw import open_image_source, parse_pairs
from kerasface.evaluation.cases import hardest_pairs
from kerasface.evaluation.plots import plot_case_study
from kerasface.evaluation.verification import evaluate_pairs, heldout_accuracy, write_report
from kerasface.config import TripletExperiment
from kerasface.data.locations import data_location
from kerasface.io import atomic_path, jsonable, write_json
from kerasface.layers import L2Normalize
from kerasface.losses import TripletAccuracy, TripletDistanceMean, get_triplet_loss, select_triplets
from kerasface.models import TripletModel, build_backbone, facenet_nn2
from kerasface.training.callbacks import RunBackup
from kerasface.training.distribute import Runtime, resume_epochs, worker_run
from kerasface.training.run_folder import RunFolderWriter, RunResult, new_run_dir

logger = logging.getLogger("kerasface.training")

__all__ = ["TripletData", "TripletRunResult", "resolve_triplet_data", "build_embedding_model", "probe_statistics",
           "embed_training_mode", "is_collapsed", "collapse_message", "plot_triplet_history", "train_triplet", "write_pairs_list"]

_EVAL_LISTS = ("pairsDevTest.txt", "pairsVal.txt")
_SUBFOLDS = 10


# --------------------------------------------------------------------------- data
@dataclass
class TripletData:
    """Who trains and what is evaluated: see :func:`resolve_triplet_data`."""

    index: IdentityIndex  # every image of --data
    train: IdentityIndex  # the training identities (>= min_images images each)
    eval_pairs: list  # Pair objects (empty: no evaluation)
    eval_source: str  # where the evaluation pairs came from, in words
    excluded: set = field(default_factory=set)  # people of the evaluation pairs (not trained on)
    folds_file: Path | None = None
    report: dict = field(default_factory=dict)


def _list_dirs(data: Path) -> list[Path]:
    return [data] if data.is_dir() else [data.parent]


def _find_list(name: str, data: Path, what: str) -> Path:
    if Path(name).is_file():
        return Path(name)
    for d in _list_dirs(data):
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"{what} {name!r} not found (looked as given and in "
                            f"{', '.join(str(d) for d in _list_dirs(data))})")


def resolve_triplet_data(cfg: TripletExperiment, data: Path) -> TripletData:
    """The training index and the evaluation pairs of ``cfg`` on ``data``.

    Evaluation pairs, first rule that applies:

    1. ``cfg.eval_pairs``: that list, whole;
    2. a folds list (``cfg.pairs``, else ``pairs.txt`` next to the data) with
       more than one fold: the pairs of ``cfg.holdout_folds`` (numbered 1..10);
    3. ``pairsDevTest.txt`` or the bundled sample's ``pairsVal.txt`` next to the data;
    4. none: the whole data set trains, no verification.

    Training identities: every identity of the data with at least
    ``cfg.min_images`` images, minus every person named in the evaluation
    pairs (matched or mismatched); with ``cfg.train_folds``, only the people
    named in those folds of the folds list.
    """
    index = IdentityIndex.open(data)
    if not len(index):
        raise ValueError(f"--data {data}: no images found")
    folds_file = None
    if cfg.pairs:
        folds_file = _find_list(cfg.pairs, data, "pairs list")
    else:
        folds_file = next((d / "pairs.txt" for d in _list_dirs(data) if (d / "pairs.txt").is_file()), None)
    folds_pairs = parse_pairs(folds_file) if folds_file else None
    n_folds = 1 + max(p.fold for p in folds_pairs) if folds_pairs else 0

    eval_pairs: list = []
    if cfg.eval_pairs:
        path = _find_list(cfg.eval_pairs, data, "evaluation pairs list")
        eval_pairs = parse_pairs(path)
        eval_source = str(path)
    elif n_folds > 1:
        bad = [f for f in cfg.holdout_folds if f > n_folds]
        if bad:
            raise ValueError(f"held-out fold(s) {bad} do not exist: {folds_file} has folds 1..{n_folds}")
        held = {f - 1 for f in cfg.holdout_folds}
        eval_pairs = [p for p in folds_pairs if p.fold in held]
        eval_source = f"{folds_file}, fold(s) {', '.join(map(str, cfg.holdout_folds))}"
    else:
        found = next((d / n for n in _EVAL_LISTS for d in _list_dirs(data) if (d / n).is_file()), None)
        if found is not None:
            eval_pairs = parse_pairs(found)
            eval_source = str(found)
        else:
            eval_source = "none"
            logger.warning("no evaluation pairs next to %s (pairs.txt, %s): training on every identity, "
                           "no verification", data, ", ".join(_EVAL_LISTS))
    excluded = {n for p in eval_pairs for n in (p.name1, p.name2)}

    if cfg.train_folds:
        if n_folds < 2:
            raise ValueError("--train-folds needs a folds list (pairs.txt next to the data, or --pairs)")
        bad = [f for f in cfg.train_folds if f > n_folds]
        if bad:
            raise ValueError(f"training fold(s) {bad} do not exist: {folds_file} has folds 1..{n_folds}")
        names = set(fold_identities(folds_pairs, [f - 1 for f in cfg.train_folds])) - excluded
        candidates = index.select(sorted(names))
    else:
        candidates = index.exclude(excluded)
    train = candidates.filter(min_images=cfg.min_images)
    if train.num_identities < 2:
        raise ValueError(f"only {train.num_identities} training identit{'y' if train.num_identities == 1 else 'ies'} "
                         f"with >= {cfg.min_images} images left after leaving out the {len(excluded)} people of the "
                         f"evaluation pairs ({eval_source}); a triplet needs two")
    c = train.counts
    report = {
        "data": str(data),
        "all": {"images": len(index), "identities": index.num_identities},
        "train": {"images": len(train), "identities": train.num_identities, "min_images": cfg.min_images,
                  "images_per_identity": {"min": int(c.min()), "median": float(np.median(c)), "max": int(c.max())},
                  "folds": list(cfg.train_folds) if cfg.train_folds else None},
        "eval": {"source": eval_source, "pairs": len(eval_pairs), "matched": sum(p.same for p in eval_pairs),
                 "people": len(excluded),
                 "images": len({r for p in eval_pairs for r in (p.path1, p.path2)})},
        "people_left_out_of_training": len(excluded & set(index.names)),
    }
    return TripletData(index, train, eval_pairs, eval_source, excluded, folds_file, report)


def write_pairs_list(pairs: list, path) -> bool:
    """Write ``pairs`` in the official LFW format (``parse_pairs`` reads it back with the same folds).

    Folds keep their order; each fold must hold as many matched as mismatched
    pairs, and all folds the same number (the format's header). Returns False
    (and writes nothing) when the pairs do not fit the format.
    """
    folds = sorted({p.fold for p in pairs})
    per_fold = []
    for f in folds:
        m = [p for p in pairs if p.fold == f and p.same]
        d = [p for p in pairs if p.fold == f and not p.same]
        per_fold.append((m, d))
    sizes = {len(m) for m, _ in per_fold} | {len(d) for _, d in per_fold}
    if not pairs or len(sizes) != 1:
        return False
    n = sizes.pop()
    lines = [f"{len(folds)}\t{n}" if len(folds) > 1 else f"{n}"]
    for m, d in per_fold:
        lines += [f"{p.name1}\t{p.idx1}\t{p.idx2}" for p in m]
        lines += [f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}" for p in d]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return True


# --------------------------------------------------------------------------- model
def build_embedding_model(cfg: TripletExperiment) -> keras.Model:
    """NN2 with its own L2 layer, or any registered backbone with an L2 normalisation added on top."""
    shape = (cfg.image_size, cfg.image_size, 3)
    if cfg.backbone == "facenet_nn2":
        return facenet_nn2(input_shape=shape, embedding_dim=cfg.embedding_dim, norm=cfg.norm,
                           l2_pooling=cfg.l2_pooling, bn_momentum=cfg.bn_momentum)
    kwargs = {"input_shape": shape, "embedding_dim": cfg.embedding_dim}
    if cfg.backbone.startswith("vargfacenet"):
        kwargs.update(implementation=cfg.group_conv, bn_momentum=cfg.bn_momentum)
    backbone = build_backbone(cfg.backbone, **kwargs)
    # float32 whatever the dtype policy: the embedding that distances and losses read
    out = L2Normalize(dtype="float32", name="l2_embedding")(backbone.outputs[0])
    return keras.Model(backbone.inputs[0], out, name=f"{backbone.name}_l2")


def _compile(cfg: TripletExperiment, embedder: keras.Model,
             runtime: Runtime | None = None) -> tuple[keras.Model, keras.Model]:
    """``(fitted model, triplet graph)``: the triplet graph (offline) or the embedding model (online)."""
    xla = runtime.compile_kwargs() if runtime is not None else {}
    triplet = TripletModel(embedder, name=f"{embedder.name}_triplet")
    stack_kw = {} if cfg.loss.startswith("difference") else {"margin": cfg.margin}
    stack_metrics = [TripletAccuracy(), TripletDistanceMean("pos"), TripletDistanceMean("neg")]
    if cfg.mining == "offline":
        triplet.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                        loss=get_triplet_loss(cfg.loss, **stack_kw), metrics=stack_metrics, **xla)
        return triplet, triplet
    embedder.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                     loss=get_triplet_loss(cfg.mining, margin=cfg.margin, squared=cfg.squared), **xla)
    # The saved graph carries the matching stack loss, ready for fine-tuning on offline triplets.
    triplet.compile(loss=get_triplet_loss(cfg.loss, **stack_kw), metrics=stack_metrics)
    return embedder, triplet


def _build_optimizer(model: keras.Model, cfg: TripletExperiment | None = None) -> None:
    """Create every variable of a training step before the first one: the optimizer's slots and
    the compiled loss / metric trackers. Otherwise TensorFlow traces the first step twice (once to
    create the variables, once more to run), which nearly doubles its slow tracing (40-45 s -> about
    29 s for the 32x32 NN2 triplet graph on the shared 2-core CPU)."""
    model.optimizer.build(model.trainable_variables)
    build = getattr(model, "_symbolic_build", None)  # Keras 3's own pre-build (private): metrics, loss
    if cfg is None or build is None:
        return
    s = cfg.image_size
    x = np.zeros((2, s, s, 3), np.float32)
    batch = (((x, x, x), np.zeros((2, 2, 1), np.float32)) if len(model.inputs) == 3
             else (x, np.zeros((2,), np.int32)))
    try:
        build(data_batch=batch)
    except Exception as e:  # an optimisation only: fit builds whatever is left
        logger.debug("symbolic pre-build skipped: %s", e)


# --------------------------------------------------------------------------- monitoring
def _pick_probe(train: IdentityIndex, size: int, seed: int, per_identity: int = 4) -> np.ndarray:
    """Rows of a fixed probe set: up to ``per_identity`` images of shuffled identities until ``size``."""
    rng = np.random.default_rng(seed + 7919)
    rows: list[int] = []
    for k in rng.permutation(train.num_identities):
        r = train.rows_of(int(k))
        take = min(len(r), per_identity, size - len(rows))
        if take < 2:
            break
        rows.extend(rng.choice(r, take, replace=False).tolist())
    return np.sort(np.asarray(rows, dtype=np.int64))


def probe_statistics(emb: np.ndarray, labels: np.ndarray, margin: float, squared: bool) -> dict:
    """Distances and triplet activity of a fixed probe set.

    ``mean_distance``: mean euclidean distance over every pair (collapse: ~0);
    ``pos_distance`` / ``neg_distance``: over same / different-identity pairs;
    ``active_fraction``: fraction of all valid triplets (a, p, n) of the probe
    with a positive hinge ``d(a,p) - d(a,n) + margin`` (squared distances when
    ``squared``); ``loss``: their mean hinge.
    """
    e = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    diff = e[:, None, :] - e[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    d = np.sqrt(d2)
    n = len(e)
    iu = np.triu_indices(n, k=1)
    same = labels[:, None] == labels[None, :]
    eye = np.eye(n, dtype=bool)
    pos_mask, neg_mask = same & ~eye, ~same
    dd = d2 if squared else d
    # hinge[a, p, n] for valid (a, p) and (a, n)
    hinge = dd[:, :, None] - dd[:, None, :] + margin
    valid = pos_mask[:, :, None] & neg_mask[:, None, :]
    nv = int(valid.sum())
    h = hinge[valid]
    return {
        "mean_distance": float(d[iu].mean()) if n > 1 else math.nan,
        "pos_distance": float(d[pos_mask].mean()) if pos_mask.any() else math.nan,
        "neg_distance": float(d[neg_mask].mean()) if neg_mask.any() else math.nan,
        "active_fraction": float((h > 0).mean()) if nv else math.nan,
        "loss": float(np.maximum(h, 0).mean()) if nv else math.nan,
        "triplets": nv,
    }


def embed_training_mode(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Embeddings of uint8 ``images`` as the training step sees them (BN on the batch's statistics).

    Keras updates BatchNormalization's moving statistics in a ``training=True``
    call; they are restored afterwards, so this has no effect on the model.
    """
    state = [v.numpy() for v in model.non_trainable_variables]
    x = (np.asarray(images, np.float32) - 127.5) / 128.0
    try:
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=True)), dtype=np.float64)
    finally:
        for v, value in zip(model.non_trainable_variables, state):
            v.assign(value)


def is_collapsed(mean_distance: float, floor: float) -> bool:
    """True when ``floor > 0`` and the probe's mean distance is below it (or NaN)."""
    return floor > 0 and not mean_distance >= floor


def collapse_message(mean_distance: float, floor: float, epoch: int, n_probe: int) -> str:
    return (f"embeddings collapsed at epoch {epoch}: the mean distance between the {n_probe} probe faces "
            "(embedded as in training) is "
            f"{mean_distance:.3g} < the floor {floor:g} (every face maps to nearly one point: the report's failure, "
            "distances ~1e-7). Try a smaller learning rate, semi-hard rather than hardest negatives, or a margin "
            "below 2 (4 with squared distances); --collapse-floor 0 disables this check.")


# --------------------------------------------------------------------------- plots
def plot_triplet_history(history: dict, path, title: str = "", floor: float = 0.0) -> None:
    """curves.png: loss, probe distances (with the collapse floor), active triplets, verification."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasface.io import atomic_path as _atomic

    n = len(history.get("loss", []))
    ep = np.arange(1, n + 1)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    ax = axes[0]
    ax.plot(ep, history.get("loss", []), "o-", label="training loss (selected / mined triplets)")
    if "probe_loss" in history:
        ax.plot(ep, history["probe_loss"], "s-", label="probe loss (all probe triplets)")
    ax.set_title("triplet loss")
    ax = axes[1]
    for k, lab in (("probe_mean_distance", "all pairs"), ("probe_pos_distance", "same person"),
                   ("probe_neg_distance", "different people"),
                   ("probe_train_mean_distance", "all pairs, BN as in training (collapse test)")):
        if k in history:
            ax.plot(ep, history[k], "x--" if "train" in k else "o-", label=lab)
    if floor > 0:
        ax.axhline(floor, color="C3", ls="--", lw=1, label=f"collapse floor {floor:g}")
    ax.set_title("probe faces: mean euclidean distance")
    ax = axes[2]
    if "probe_active_fraction" in history:
        ax.plot(ep, history["probe_active_fraction"], "o-", label="probe triplets with loss > 0")
    if "selected_fraction" in history:
        ax.plot(ep, history["selected_fraction"], "s-", label="anchor-positive pairs with a semi-hard negative")
    if "triplet_accuracy" in history:
        ax.plot(ep, history["triplet_accuracy"], "^-", label="training triplets with d(a,p) < d(a,n)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("triplets")
    ax = axes[3]
    for k, lab in (("verify_accuracy", "accuracy (held-out threshold)"), ("verify_auc", "ROC AUC")):
        if k in history:
            y = np.asarray(history[k], dtype=float)
            ok = np.isfinite(y)
            ax.plot(ep[ok], y[ok], "o-", label=lab)
    ax.set_title("verification on the held-out pairs")
    for ax in axes:
        ax.set_xlim(0.5, max(n, 1) + 0.5)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with _atomic(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- training
@dataclass
class TripletRunResult(RunResult):
    triplet_model: keras.Model | None = None
    data: TripletData | None = None


def _fit_verbose(verbose) -> int:
    if verbose == "auto":
        return 1 if sys.stderr.isatty() else 0
    return int(verbose or 0) if verbose != 2 else 0


def train_triplet(cfg: TripletExperiment, run_dir: Path | None = None, verbose="auto",
                  runtime: Runtime | None = None) -> TripletRunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics and both models.

    ``verbose``: 0 silent; 2 one log line per chunk and per epoch; 1 / "auto"
    also Keras progress bars (on a terminal). ``runtime``: strategy, mixed
    precision, XLA (default: one device, float32).
    """
    runtime = runtime or Runtime()
    with worker_run(runtime, run_dir) as run_dir:  # non-chief workers: a temporary folder
        return _train_triplet(cfg, run_dir, verbose, runtime)


def _train_triplet(cfg: TripletExperiment, run_dir, verbose, runtime: Runtime) -> TripletRunResult:
    data_path = data_location(cfg.data)
    td = resolve_triplet_data(cfg, data_path)
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.out, cfg.name)
    resolved = cfg.to_dict() | {"data": str(data_path), "eval_pairs_source": td.eval_source,
                                "folds_file": str(td.folds_file) if td.folds_file else None}
    # same run folder, same settings: resume after the backup (the recorded runtime may differ)
    done_epochs = resume_epochs(runtime, run_dir, resolved)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", resolved | {"runtime": runtime.describe()})
    with atomic_path(run_dir / "train_identities.txt") as tmp:
        tmp.write_text("".join(f"{n}\n" for n in td.train.names))
    if td.eval_pairs and write_pairs_list(td.eval_pairs, run_dir / "eval_pairs.txt"):
        td.report["eval"]["list"] = "eval_pairs.txt"
    say = (lambda *a: logger.info(*a)) if verbose else (lambda *a: logger.debug(*a))
    say("training identities: %d (%d images, >= %d each); evaluation: %d pairs from %s, their %d people left out",
        td.train.num_identities, len(td.train), cfg.min_images, len(td.eval_pairs), td.eval_source, len(td.excluded))
    keras.utils.set_random_seed(cfg.seed)

    with runtime.precision(), runtime.scope():
        embedder = build_embedding_model(cfg)
        fitted, triplet = _compile(cfg, embedder, runtime)
        _build_optimizer(fitted, cfg)
    loader = ChunkedLoader(td.train, chunk_size=cfg.chunk_size, images_per_identity=cfg.images_per_identity,
                           mode=cfg.chunk_mode, image_size=cfg.image_size, center_crop=cfg.center_crop, seed=cfg.seed,
                           prefetch=1, on_error="raise" if cfg.on_error == "error" else "skip")
    probe = loader.load(_pick_probe(td.train, cfg.probe_size, cfg.seed))
    source = open_image_source(data_path)
    score_kw = dict(metric="l2", image_size=cfg.image_size, center_crop=cfg.center_crop,
                    batch_size=max(cfg.batch_size, 32), verbose=0)
    fit_verbose = _fit_verbose(verbose)
    P = cfg.batch_size // cfg.k_images
    if runtime.strategy == "default":
        embed_fn = embedder.predict_on_batch
    else:
        # Under a tf.distribute strategy Keras's predict_on_batch runs the whole batch on every replica and
        # concatenates the results (2 replicas: 2N rows for N images); a plain call reads the mirrored weights.
        _infer = tf.function(lambda x: embedder(x, training=False))

        def embed_fn(x):
            return _infer(tf.convert_to_tensor(x)).numpy()
    state = {"images_seen": 0, "collapse": None, "stopped": None}

    def summary(h, epoch_seconds, complete):
        later = epoch_seconds[1:] or epoch_seconds
        per_epoch = sum(later) / len(later)
        out = {
            "preset": cfg.name,
            "complete": complete,
            "epochs_run": len(epoch_seconds),
            "epochs_planned": cfg.epochs,
            "mining": cfg.mining,
            "loss": cfg.loss if cfg.mining == "offline" else f"{cfg.mining} ({'squared' if cfg.squared else 'plain'} distances)",
            "margin": cfg.margin,
            "final": {k: v[-1] for k, v in h.items()},
            "first": {k: v[0] for k, v in h.items()},
            "train_identities": td.train.num_identities,
            "train_images": len(td.train),
            "eval_pairs": len(td.eval_pairs),
            "probe_images": len(probe),
            "epoch_seconds": epoch_seconds,
            # Later epochs exclude the first one's graph tracing.
            "seconds_per_epoch": per_epoch,
            "images_seen": state["images_seen"],
            "collapse": state["collapse"],
            "stopped": state["stopped"],
            "loader": loader.stats,
        }
        return out

    title = f"{cfg.name}: {cfg.backbone} {cfg.image_size}px, {cfg.mining} mining, margin {cfg.margin}"
    writer = RunFolderWriter(run_dir, title, summary, models={"model.keras": embedder, "triplet.keras": triplet},
                             plot=lambda h, p: plot_triplet_history(h, p, title=title, floor=cfg.collapse_floor),
                             csv=True)
    writer.set_model(fitted)
    write_json(run_dir / "data_report.json", td.report)
    backup = RunBackup(run_dir / "backup")
    if done_epochs:
        if backup.restore(fitted) != done_epochs:
            raise ValueError(f"{run_dir / 'backup'}: inconsistent backup; delete it to start over")
        writer.resume(done_epochs)
        # images seen in the epochs kept, from their history (metrics.json may be one epoch ahead)
        h = writer.history
        state["images_seen"] = int(3 * sum(h.get("triplets", [])) if cfg.mining == "offline"
                                   else sum(h.get("batches", [])) * P * cfg.k_images)

    def evaluate_now():
        res = evaluate_pairs(embedder, source, td.eval_pairs, **score_kw)
        res.metrics.update(heldout_accuracy(res.scores, _SUBFOLDS))
        return res

    last_eval = None
    try:
        for epoch in range(done_epochs, cfg.epochs):
            t0 = time.perf_counter()
            loss_sum = loss_n = 0.0
            acc_sum = 0.0
            n_triplets = n_ap_pairs = n_batches = 0
            n_selected = [0]  # offline: triplets selected, before --max-triplets-per-chunk
            for chunk in loader.epoch(epoch):
                tc = time.perf_counter()
                sel0 = n_selected[0]
                chunk_seed = (cfg.seed * 1_000_003 + epoch * 1009 + chunk.number) & 0x7FFFFFFF
                if cfg.mining == "offline":
                    rng = np.random.default_rng(chunk_seed)

                    def selector(emb, labels):
                        t = select_triplets(emb, labels, cfg.margin, squared=cfg.squared,
                                            fallback=cfg.selection_fallback, rng=rng)
                        n_selected[0] += len(t)
                        if cfg.max_triplets_per_chunk and len(t) > cfg.max_triplets_per_chunk:
                            t = t[np.sort(rng.choice(len(t), cfg.max_triplets_per_chunk, replace=False))]
                        return t

                    ds, trip = offline_triplet_dataset(chunk, embed_fn, selector, batch_size=cfg.batch_size,
                                                       seed=chunk_seed, return_triplets=True)
                    _, counts = np.unique(chunk.labels, return_counts=True)
                    n_ap_pairs += int((counts * (counts - 1) // 2).sum())
                    weight = len(trip)
                    steps = -(-weight // cfg.batch_size)
                    state["images_seen"] += 3 * weight
                    n_triplets += weight
                else:
                    # a chunk with fewer than P identities (the tail of an epoch) gives no batch
                    steps = weight = len(pk_plan(chunk, P, cfg.k_images, epoch=0, seed=chunk_seed))
                    ds = pk_batches(chunk, P, cfg.k_images, seed=chunk_seed) if steps else None
                    n_batches += steps
                    state["images_seen"] += steps * P * cfg.k_images
                t_fit0 = time.perf_counter()
                if steps == 0:
                    continue
                # The known length gives Keras a progress-bar total (and no "ran out of data" warning).
                ds = runtime.shard(ds.apply(tf.data.experimental.assert_cardinality(steps)), source="generator")
                t_fit = time.perf_counter()
                h = fitted.fit(ds, epochs=1, verbose=fit_verbose, shuffle=False).history
                t_fit = time.perf_counter() - t_fit
                if not math.isfinite(h["loss"][0]):  # stop now: the weights are NaN, this epoch is never recorded
                    state["nan"] = {"epoch": epoch + 1, "chunk": chunk.number + 1, "loss": h["loss"][0]}
                    state["stopped"] = (f"the training loss became {h['loss'][0]} at epoch {epoch + 1}, chunk "
                                        f"{chunk.number + 1}; the run folder keeps the models of epoch {epoch}")
                    logger.error(state["stopped"])
                    break
                loss_sum += h["loss"][0] * weight
                loss_n += weight
                if "triplet_accuracy" in h:
                    acc_sum += h["triplet_accuracy"][0] * weight
                say("epoch %d/%d, chunk %d: %d images of %d identities, %s, loss %.4f (%.1f s%s)", epoch + 1,
                    cfg.epochs, chunk.number + 1, len(chunk), len(np.unique(chunk.labels)),
                    f"{weight} triplets (of {n_selected[0] - sel0} selected)" if cfg.mining == "offline"
                    else f"{weight} P x K batches",
                    h["loss"][0], time.perf_counter() - tc,
                    f": embedding + selection {t_fit0 - tc:.1f} s, fit {t_fit:.1f} s" if cfg.mining == "offline" else "")
            if state.get("nan"):
                break
            logs: dict = {"loss": loss_sum / loss_n if loss_n else math.nan}
            if cfg.mining != "offline":
                logs["batches"] = n_batches
            else:
                logs.update(triplets=n_triplets, selected=n_selected[0],
                            selected_fraction=n_selected[0] / n_ap_pairs if n_ap_pairs else math.nan,
                            triplet_accuracy=acc_sum / loss_n if loss_n else math.nan)
            ps = probe_statistics(embed_images(probe.images, embed_fn), probe.labels, cfg.margin, cfg.squared)
            logs.update({f"probe_{k}": v for k, v in ps.items() if k != "triplets"})
            # The collapse test reads the geometry the loss sees (training-mode BN): early in a short run
            # the inference-mode embeddings all sit close together while the BN moving statistics lag.
            train_d = probe_statistics(embed_training_mode(embedder, probe.images), probe.labels, cfg.margin,
                                       cfg.squared)["mean_distance"]
            logs["probe_train_mean_distance"] = train_d
            due = td.eval_pairs and (epoch + 1 == cfg.epochs or (cfg.verify_every > 0 and (epoch + 1) % cfg.verify_every == 0))
            collapsed = is_collapsed(train_d, cfg.collapse_floor)
            if due or (collapsed and td.eval_pairs):
                res = evaluate_now()
                last_eval = (epoch, res)
                m = res.metrics
                logs.update(verify_accuracy=m.get("heldout_accuracy_mean", math.nan),
                            verify_auc=math.nan if m["auc"] is None else m["auc"],
                            verify_eer=math.nan if m["eer_percent"] is None else m["eer_percent"])
            writer.record(logs, time.perf_counter() - t0)
            backup.save(epoch + 1, fitted)  # after the writer's files: see RunFolderWriter.resume
            say("epoch %d/%d: loss %.4f, probe mean distance %.4f (same %.4f, different %.4f; training mode %.4f), "
                "active probe triplets %.3f%s (%.1f s)", epoch + 1, cfg.epochs, logs["loss"], ps["mean_distance"],
                ps["pos_distance"], ps["neg_distance"], train_d, ps["active_fraction"],
                f", held-out accuracy {logs['verify_accuracy']:.4f}, AUC {logs['verify_auc']:.4f}"
                if "verify_auc" in logs else "", writer.epoch_seconds[-1])
            if collapsed:
                state["collapse"] = {"epoch": epoch + 1, "probe_train_mean_distance": train_d,
                                     "probe_mean_distance": ps["mean_distance"], "floor": cfg.collapse_floor}
                state["stopped"] = collapse_message(train_d, cfg.collapse_floor, epoch + 1, len(probe))
                logger.error(state["stopped"])
                break
    finally:
        loader.close()

    if state.get("nan"):
        if not writer.epoch_seconds:
            write_json(run_dir / "metrics.json", {"preset": cfg.name, "complete": False, "epochs_run": 0,
                                                  "stopped": state["stopped"], "nan": state["nan"]})
            raise FloatingPointError(f"{state['stopped']}: no epoch finished, no model was written ({run_dir})")
        # Evaluate (and report) the last good epoch's saved weights, not the NaN ones in memory.
        embedder.load_weights(str(run_dir / "model.keras"))
    if not writer.epoch_seconds:
        raise RuntimeError(f"training ran no epoch; see {run_dir}")
    epochs_run = len(writer.epoch_seconds)
    if epochs_run == cfg.epochs and state["stopped"] is None:
        backup.delete()  # complete: nothing to resume (a stopped run keeps it)
    metrics = summary(writer.history, writer.epoch_seconds,
                      epochs_run == cfg.epochs and state["stopped"] is None)
    if td.eval_pairs:
        res = last_eval[1] if last_eval and last_eval[0] == epochs_run - 1 else evaluate_now()
        write_report(res, run_dir, source=source, title=f"{cfg.name}: held-out pairs ({td.eval_source})",
                     metrics_file=None)
        metrics["verification"] = res.metrics
        metrics["case_study"] = _case_study(embedder, source, td, cfg, res, run_dir, score_kw)
    else:
        metrics["case_study"] = _probe_case_study(probe, td.train, embed_fn, cfg, run_dir)
    metrics = jsonable(metrics)
    write_json(run_dir / "metrics.json", metrics)
    return TripletRunResult(run_dir=run_dir, metrics=metrics, model=embedder, triplet_model=triplet, data=td)


# --------------------------------------------------------------------------- case study
def _face_reader(source, size: int, center_crop: float):
    from kerasface.data.images import read_face

    return lambda rel: read_face(source, rel, size, center_crop, black_if_bad=True)


def _describe(cases, rel, names) -> list:
    return [{"image1": rel[c.i], "image2": rel[c.j], "name1": names[c.i], "name2": names[c.j],
             "distance": c.distance} for c in cases]


def _case_study(embedder, source, td: TripletData, cfg: TripletExperiment, res, run_dir: Path, score_kw) -> dict:
    """Hardest positive / negative pairs among every held-out face of the evaluation pairs."""
    from kerasface.evaluation.embeddings import extract_embeddings

    ok_pairs = res.scores.pairs
    rel = list(dict.fromkeys(r for p in ok_pairs for r in (p.path1, p.path2)))
    emb = extract_embeddings(embedder, source, rel, image_size=cfg.image_size, center_crop=cfg.center_crop,
                             batch_size=score_kw["batch_size"], verbose=0)
    names = [r.split("/", 1)[0] for r in emb.relpaths]
    pos, neg, same_d, diff_d = hardest_pairs(emb.vectors, names, n=6, valid=emb.ok)
    face = _face_reader(source, 112, cfg.center_crop)
    threshold = res.metrics.get("best_threshold")
    plot_case_study(lambda i: face(emb.relpaths[i]), names, pos, neg, same_d, diff_d, run_dir / "case_study.png",
                    threshold=threshold,
                    title=f"{cfg.name}: hardest pairs among the {len(rel)} held-out faces of {td.eval_source} "
                          f"(all {len(same_d) + len(diff_d):,} pairs; red = wrong at the best threshold)")
    return {"faces": len(rel), "source": td.eval_source, "same_pairs": int(len(same_d)),
            "different_pairs": int(len(diff_d)),
            "same_mean_distance": float(np.mean(same_d)) if len(same_d) else None,
            "different_mean_distance": float(np.mean(diff_d)) if len(diff_d) else None,
            "threshold": threshold,
            "hardest_positive": _describe(pos, emb.relpaths, names),
            "hardest_negative": _describe(neg, emb.relpaths, names), "file": "case_study.png"}


def _probe_case_study(probe, train: IdentityIndex, embed_fn, cfg: TripletExperiment, run_dir: Path) -> dict:
    """Without evaluation pairs: the hardest pairs among the (training) probe faces."""
    emb = embed_images(probe.images, embed_fn)
    names = [train.names[k] for k in probe.labels]
    rel = train.paths(probe.rows)
    pos, neg, same_d, diff_d = hardest_pairs(emb, names, n=6)
    plot_case_study(lambda i: probe.images[i], names, pos, neg, same_d, diff_d, run_dir / "case_study.png",
                    title=f"{cfg.name}: hardest pairs among the {len(probe)} probe faces (training identities; "
                          "no evaluation pairs)")
    return {"faces": len(probe), "source": "probe (training identities)", "same_pairs": int(len(same_d)),
            "different_pairs": int(len(diff_d)), "hardest_positive": _describe(pos, rel, names),
            "hardest_negative": _describe(neg, rel, names), "file": "case_study.png"}
