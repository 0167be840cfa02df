"""Train a Siamese pair verifier (report 000) and write its run folder.

Run folder contents: ``model.keras``, ``config.json`` (the resolved preset),
``history.csv`` and ``history.json``, ``curves.png`` (accuracy and loss,
train vs validation), ``metrics.json`` (final and best validation figures,
data counts, timing) and ``data_report.json`` (pairs kept/missing/corrupt).

Kills and NaNs (:mod:`kerasface.training.runner`): every file is written
atomically after each epoch and the training state (weights + optimizer) is
backed up in ``backup/``; running the same command with the same ``run_dir``
resumes after the last finished epoch (other settings: ``ValueError``). A
NaN/inf loss stops the run (``FloatingPointError`` naming epoch and step) with
the last good epoch's files kept and ``metrics.json`` saying
``"complete": false`` and ``"stopped"``.

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

from kerasface.config import PairExperiment
from kerasface.data import PairData, open_image_source, parse_pairs
from kerasface.data.locations import data_location
from kerasface.data.splits import FOLDS_LIST, find_pairs_list, resolve_pair_lists, split_pair_folds
from kerasface.io import write_json
from kerasface.layers import set_group_conv_implementation
from kerasface.models import SiameseVerifier, build_backbone
from kerasface.optimizers import FusedAdam
from kerasface.training.distribute import Runtime
from kerasface.training.init_from import init_model_for, load_init_model
from kerasface.training.run_folder import RunResult
from kerasface.training.runner import Task, Verification, run_training

logger = logging.getLogger("kerasface.training")

__all__ = ["train_pairs", "build_verifier", "PairTask"]


def build_verifier(cfg: PairExperiment, runtime: Runtime | None = None,
                   backbone: keras.Model | None = None) -> keras.Model:
    """The compiled Siamese verifier of ``cfg``. With a ``runtime``, call it inside
    ``runtime.precision()`` and ``runtime.scope()`` (as :func:`train_pairs` does); it adds the runtime's
    ``compile`` arguments (XLA). ``backbone``: a trained embedding model to start from (``--init-from``;
    its grouped convolutions then run ``cfg.group_conv``'s path, and ``cfg.freeze_backbone`` freezes it)
    instead of a new ``cfg.backbone``."""
    if backbone is None:
        backbone = build_backbone(
            cfg.backbone,
            input_shape=(cfg.image_size, cfg.image_size, 3),
            implementation=cfg.group_conv,
        )
    else:
        set_group_conv_implementation(backbone, cfg.group_conv)
        backbone.trainable = not cfg.freeze_backbone
    model = SiameseVerifier(backbone, hidden_units=cfg.hidden_units, dropout=cfg.dropout,
                            name=f"{cfg.backbone}_verifier")
    model.compile(
        optimizer=FusedAdam(cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        **(runtime.compile_kwargs() if runtime is not None else {}),
    )
    return model


def _load(pairs_path: Path, source, cfg: PairExperiment, what: str) -> PairData:
    pairs = parse_pairs(pairs_path)
    if cfg.holdout_folds:
        train, held = split_pair_folds(pairs, cfg.holdout_folds, pairs_path)
        pairs = held if what == "validation" else train
    logger.info("%s: %d pairs from %s", what, len(pairs), pairs_path)
    data = PairData.from_pairs(
        pairs, source, size=cfg.image_size, center_crop=cfg.center_crop,
        on_missing=cfg.on_missing, on_error="raise" if cfg.on_error == "error" else cfg.on_error,
    )
    if not len(data.labels):
        raise ValueError(f"{what}: no usable pairs left in {pairs_path} (report: {data.report})")
    return data


class PairTask(Task):
    """Pairs of faces -> same / different person: the train and validation pair lists next to the data."""

    def __init__(self, cfg: PairExperiment):
        self.cfg = cfg
        self.title = f"{cfg.name} ({cfg.backbone})"

    def settings(self) -> dict:
        cfg = self.cfg
        self.data_path = data_location(cfg.data)
        if cfg.holdout_folds:
            if cfg.eval_pairs:
                raise ValueError("--holdout-folds validates on folds of the training list; "
                                 "it cannot be combined with --eval-pairs")
            self.train_list = self.val_list = find_pairs_list(
                self.data_path, cfg.train_pairs, defaults=(FOLDS_LIST,), what="training pairs list (a folds list)")
        else:
            self.train_list, self.val_list = resolve_pair_lists(self.data_path, cfg.train_pairs, cfg.eval_pairs)
        return cfg.to_dict() | {"data": str(self.data_path), "train_pairs": str(self.train_list),
                                "eval_pairs": str(self.val_list)}

    def prepare(self, run_dir: Path, verbose, runtime: Runtime) -> None:
        cfg = self.cfg
        self.source = open_image_source(self.data_path)
        self.train = _load(self.train_list, self.source, cfg, "train")
        self.val = _load(self.val_list, self.source, cfg, "validation")
        write_json(run_dir / "data_report.json", {"train": self.train.report, "validation": self.val.report})
        # Global batches; each worker of a multiworker run keeps its part of every batch (DATA sharding of the
        # in-memory pipeline, which every worker runs with the same seed). Already shuffled (seeded) here.
        light = dict(low_light=cfg.low_light, low_light_seed=cfg.low_light_seed)
        val = self.val.dataset(batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed, **light)
        self.runtime, self.light = runtime, light
        self.fit_data = {"validation_data": runtime.shard(val, source="generator")}

    def build(self, runtime: Runtime) -> keras.Model:
        # Without --jit-compile the runtime's compile arguments are Keras's defaults: the one-argument call
        # (which tests and callers may replace with their own builder) compiles the same model.
        cfg = self.cfg
        if cfg.init_from:
            backbone = init_model_for(load_init_model(cfg.init_from, cfg.image_size), runtime)
            return build_verifier(cfg, runtime, backbone=backbone)
        return build_verifier(cfg, runtime) if runtime.jit_compile else build_verifier(cfg)

    def verification(self) -> Verification:
        cfg = self.cfg
        return Verification(self.source, self.val.pairs, title=f"{cfg.name}: validation pairs", prefix="val_verify_",
                            score_kwargs=dict(center_crop=cfg.center_crop, batch_size=cfg.batch_size,
                                              low_light_seed=cfg.low_light_seed if cfg.low_light else None))

    def fit_arguments(self, first_epoch: int) -> dict:
        # Endless epochs numbered from first_epoch: epoch k's pair order and flips depend on (seed, k), so a
        # resumed run sees the data of the run that never stopped (not epoch 1's order again).
        cfg = self.cfg
        train = self.train.dataset(batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   augment=cfg.augment == "flip", repeat=True, first_epoch=first_epoch, **self.light)
        steps = -(-len(self.train.labels) // cfg.batch_size)
        return self.fit_data | {"x": self.runtime.shard(train, source="generator"), "steps_per_epoch": steps}

    def summary(self, h: dict, epoch_seconds: list, complete: bool) -> dict:
        n_train, n_val = int(len(self.train.labels)), int(len(self.val.labels))
        best = max(range(len(h["val_accuracy"])), key=lambda i: h["val_accuracy"][i])
        later = epoch_seconds[1:] or epoch_seconds
        per_epoch = sum(later) / len(later)
        return {
            "preset": self.cfg.name,
            "complete": complete,
            "epochs_run": len(h["val_accuracy"]),
            "epochs_planned": self.cfg.epochs,
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

    def report(self, metrics: dict, model, run) -> dict:
        # Skipped inputs, counted again at the end (data_report.json has them from the start-up pass).
        metrics["data"] = {"train": self.train.report, "validation": self.val.report}
        return metrics


def train_pairs(cfg: PairExperiment, run_dir: Path | None = None, verbose="auto",
                runtime: Runtime | None = None, run_name: str | None = None) -> RunResult:
    """Train ``cfg`` end to end and write the run folder; returns it with the metrics.

    ``runtime``: strategy, mixed precision, XLA (default: one device, float32);
    ``run_name``: the new run folder's name before its time stamp (default ``cfg.name``).
    """
    return run_training(PairTask(cfg), run_dir, verbose, runtime, run_name)
