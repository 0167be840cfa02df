"""Train a Siamese pair verifier (report 000) and write its run folder.

Run folder contents: ``model.keras``, ``config.json`` (the resolved preset),
``history.csv`` and ``history.json``, ``curves.png`` (accuracy and loss,
train vs validation), ``metrics.json`` (final and best validation figures,
data counts, timing) and ``data_report.json`` (pairs kept/missing/corrupt).

Kills and NaNs: every file is written atomically after each epoch and the
training state (weights + optimizer) is backed up in ``backup/``
(:class:`~kerasface.training.callbacks.RunBackup`); running the same command
with the same ``run_dir`` resumes after the last finished epoch (other
settings: ``ValueError``).  A NaN/inf loss stops the run
(``FloatingPointError`` naming epoch and step) with the last good epoch's
files kept and ``metrics.json`` saying ``"complete": false`` and ``"stopped"``.

Hardware (``runtime``, a :class:`~kerasface.training.distribute.Runtime`):
the model is built and compiled inside the strategy's scope after the
mixed-precision policy is set (the verifier's output, so its loss, stays
float32); ``cfg.batch_size`` is the global batch, split across replicas;
only the chief of a multiworker run writes the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from kerasface.data import PairData, open_image_source, parse_pairs
from kerasface.evaluation.verification import evaluate_pairs, write_report
from kerasface.config import PairExperiment
from kerasface.data.locations import data_location
from kerasface.io import jsonable, write_json
from kerasface.models import SiameseVerifier, build_backbone
from kerasface.training.callbacks import RunBackup, StopOnNaN, VerificationCallback
from kerasface.training.distribute import Runtime, resume_epochs, worker_run
from kerasface.training.run_folder import RunFolderWriter as _RunFolderWriter
from kerasface.training.run_folder import RunResult
from kerasface.training.run_folder import new_run_dir as _new_run_dir

logger = logging.getLogger("kerasface.training")

__all__ = ["train_pairs", "resolve_pair_lists", "build_verifier", "RunResult"]

_DEFAULT_LISTS = (("pairs.txt", "pairsDevTest.txt"), ("pairsTrain.txt", "pairsVal.txt"))


def _list_dirs(data: Path) -> list[Path]:
    return [data] if data.is_dir() else [data.parent]


def resolve_pair_lists(data: Path, train_pairs: str | None, val_pairs: str | None) -> tuple[Path, Path]:
    """Find the train/validation pair lists: explicit paths, else next to ``data``.

    With no names given, ``pairs.txt`` + ``pairsDevTest.txt`` (the report's
    protocol) are looked for first, then the bundled sample's
    ``pairsTrain.txt`` + ``pairsVal.txt``.
    """
    dirs = _list_dirs(data)

    def near_data(name: str) -> Path | None:
        return next((d / name for d in dirs if (d / name).is_file()), None)

    def given(name: str) -> Path | None:
        # A name the user typed: as given (relative to the working folder) first.
        return Path(name) if Path(name).is_file() else near_data(name)

    if train_pairs or val_pairs:
        defaults = next((d for d in _DEFAULT_LISTS if all(near_data(n) for n in d)), _DEFAULT_LISTS[0])
        names = (train_pairs, val_pairs)
        found = [given(n) if n else near_data(d) for n, d in zip(names, defaults)]
        for n, d, f in zip(names, defaults, found):
            if f is None:
                raise FileNotFoundError(
                    f"pairs list {n or d!r} not found (looked as given and in {', '.join(map(str, dirs))})"
                )
        return found[0], found[1]
    for names in _DEFAULT_LISTS:
        found = [near_data(n) for n in names]
        if all(found):
            return found[0], found[1]
    raise FileNotFoundError(
        f"no pairs lists next to {data}: expected {' + '.join(_DEFAULT_LISTS[0])} or "
        f"{' + '.join(_DEFAULT_LISTS[1])}; pass --train-pairs and --val-pairs"
    )


def build_verifier(cfg: PairExperiment, runtime: Runtime | None = None) -> keras.Model:
    """The compiled Siamese verifier of ``cfg``. With a ``runtime``, call it inside
    ``runtime.precision()`` and ``runtime.scope()`` (as :func:`train_pairs` does); it adds the runtime's
    ``compile`` arguments (XLA)."""
    backbone = build_backbone(
        cfg.backbone,
        input_shape=(cfg.image_size, cfg.image_size, 3),
        implementation=cfg.group_conv,
    )
    model = SiameseVerifier(backbone, hidden_units=cfg.hidden_units, dropout=cfg.dropout,
                            name=f"{cfg.backbone}_verifier")
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **(runtime.compile_kwargs() if runtime is not None else {}),
    )
    return model


def _load(pairs_path: Path, source, cfg: PairExperiment, what: str) -> PairData:
    pairs = parse_pairs(pairs_path)
    logger.info("%s: %d pairs from %s", what, len(pairs), pairs_path)
    data = PairData.from_pairs(
        pairs, source, size=cfg.image_size, center_crop=cfg.center_crop,
        on_missing=cfg.on_missing, on_error="raise" if cfg.on_error == "error" else cfg.on_error,
    )
    if not len(data.labels):
        raise ValueError(f"{what}: no usable pairs left in {pairs_path} (report: {data.report})")
    return data


def train_pairs(cfg: PairExperiment, run_dir: Path | None = None, verbose="auto",
                runtime: Runtime | None = None) -> RunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics.

    ``runtime``: strategy, mixed precision, XLA (default: one device, float32).
    """
    runtime = runtime or Runtime()
    with worker_run(runtime, run_dir) as run_dir:  # non-chief workers: a temporary folder
        return _train_pairs(cfg, run_dir, verbose, runtime)


def _train_pairs(cfg: PairExperiment, run_dir, verbose, runtime: Runtime) -> RunResult:
    data_path = data_location(cfg.data)
    train_list, val_list = resolve_pair_lists(data_path, cfg.train_pairs, cfg.eval_pairs)
    resolved = cfg.to_dict() | {"data": str(data_path), "train_pairs": str(train_list),
                                "eval_pairs": str(val_list)}
    run_dir = Path(run_dir) if run_dir else _new_run_dir(cfg.out, cfg.name)
    done_epochs = resume_epochs(runtime, run_dir, resolved)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # "runtime": how this run executes (not compared when resuming: the hardware may change)
        write_json(run_dir / "config.json", resolved | {"runtime": runtime.describe()})
    except OSError as e:
        raise OSError(f"cannot write the run folder {run_dir}: {e.strerror or e}") from None
    keras.utils.set_random_seed(cfg.seed)

    source = open_image_source(data_path)
    train = _load(train_list, source, cfg, "train")
    val = _load(val_list, source, cfg, "validation")
    write_json(run_dir / "data_report.json", {"train": train.report, "validation": val.report})

    # Global batches; each worker of a multiworker run keeps its part of every batch (DATA sharding of the
    # in-memory pipeline, which every worker runs with the same seed).
    train_ds = runtime.shard(train.dataset(batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                                           augment=cfg.augment == "flip", low_light=cfg.low_light,
                                           low_light_seed=cfg.low_light_seed), source="generator")
    val_ds = runtime.shard(val.dataset(batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed,
                                       low_light=cfg.low_light, low_light_seed=cfg.low_light_seed),
                           source="generator")

    with runtime.precision(), runtime.scope():
        # Without --jit-compile the runtime's compile arguments are Keras's defaults: the one-argument call
        # (which tests and callers may replace with their own builder) compiles the same model.
        model = build_verifier(cfg, runtime) if runtime.jit_compile else build_verifier(cfg)
    n_train, n_val = int(len(train.labels)), int(len(val.labels))

    def summary(h, epoch_seconds, complete):
        best = max(range(len(h["val_accuracy"])), key=lambda i: h["val_accuracy"][i])
        later = epoch_seconds[1:] or epoch_seconds
        per_epoch = sum(later) / len(later)
        return {
            "preset": cfg.name,
            "complete": complete,
            "epochs_run": len(h["val_accuracy"]),
            "epochs_planned": cfg.epochs,
            "final": {k: v[-1] for k, v in h.items()},
            "best_val_accuracy": h["val_accuracy"][best],
            "best_val_accuracy_epoch": best + 1,
            "best_val_loss": min(h["val_loss"]),
            "train_pairs": n_train,
            "val_pairs": n_val,
            "epoch_seconds": epoch_seconds,
            # Later epochs exclude the first one's graph tracing.
            "seconds_per_epoch": per_epoch,
            "train_pairs_per_second": n_train / per_epoch,
        }

    guard = StopOnNaN()
    writer = _RunFolderWriter(run_dir, f"{cfg.name} ({cfg.backbone})", summary, csv=True, nan_guard=guard)
    writer.resume(done_epochs)
    score_kwargs = dict(center_crop=cfg.center_crop, batch_size=cfg.batch_size,
                        low_light_seed=cfg.low_light_seed if cfg.low_light else None)
    callbacks = [
        # Before the loggers, so that its keys reach history.csv / history.json.
        *([VerificationCallback(source, val.pairs, every=cfg.verify_every, prefix="val_verify_", **score_kwargs)]
          if cfg.verify_every > 0 else []),
        guard,
        writer,  # history.json/.csv, curves.png, model.keras, metrics.json: atomically, after every epoch
        RunBackup(run_dir / "backup", nan_guard=guard),  # after the writer: see RunFolderWriter.resume
    ]
    # The dataset is already shuffled (seeded) by PairData.dataset.
    model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks,
              shuffle=False, verbose=verbose)
    if guard.tripped:
        stopped = dict(guard.stopped, reason="non-finite loss")
        base = summary(writer.history, writer.epoch_seconds, False) if writer.history.get("val_accuracy") else {
            "preset": cfg.name, "complete": False, "epochs_run": 0, "epochs_planned": cfg.epochs}
        write_json(run_dir / "metrics.json", base | {"stopped": stopped})
        raise FloatingPointError(f"{guard.message()}: {run_dir}")
    if not writer.history.get("val_accuracy"):
        raise RuntimeError(f"training produced no validation results; see {run_dir}")
    metrics = summary(writer.history, writer.epoch_seconds, len(writer.history["val_accuracy"]) == cfg.epochs)
    # ROC, EER, AUC and the hardest pairs of the final model on the validation list.
    verification = evaluate_pairs(model, source, val.pairs, verbose=0, **score_kwargs)
    write_report(verification, run_dir, source=source, title=f"{cfg.name}: validation pairs", metrics_file=None)
    metrics["verification"] = verification.metrics
    # Skipped inputs, counted again at the end (data_report.json has them from the start-up pass).
    metrics["data"] = {"train": train.report, "validation": val.report}
    metrics = jsonable(metrics)  # what metrics.json holds (NaN/inf as None)
    write_json(run_dir / "metrics.json", metrics)
    return RunResult(run_dir=run_dir, metrics=metrics, model=model)
