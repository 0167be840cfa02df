"""Training callbacks: verification every N epochs, held-out accuracy, the learning rate, NaN stop, kill-safe backup."""

from __future__ import annotations

import logging
import math
import time

import keras
import numpy as np

from kerasface.data.lfw import parse_pairs
from kerasface.data.sources import open_image_source
from kerasface.evaluation.verification import evaluate_pairs
from kerasface.io import atomic_path, write_json
from kerasface.layers import load_weights
from kerasface.models import MarginHead
from kerasface.ops import l2_normalize, normalize_faces

__all__ = ["VerificationCallback", "StopOnNaN", "RunBackup", "HeldOutAccuracy", "HeldOutTeacherCosine",
           "LogLearningRate"]

logger = logging.getLogger("kerasface.training")


class VerificationCallback(keras.callbacks.Callback):
    """Run :func:`kerasface.evaluation.evaluate_pairs` on ``pairs`` every ``every`` epochs.

    It adds to the epoch's logs (so to ``History``, ``CSVLogger`` and the run
    folder's ``history.json`` / ``curves.png``, when it is placed before them in
    the callbacks list):

    * ``{prefix}accuracy``: k-fold accuracy when the list has folds (``pairs.txt``),
      else the accuracy at the best threshold of these pairs;
    * ``{prefix}auc`` and ``{prefix}eer`` (percent).

    Epochs that are not evaluated log NaN so every history column keeps one
    value per epoch; the last epoch of ``fit`` is always evaluated.
    ``score_kwargs`` go to :func:`~kerasface.evaluation.verification.score_pairs`
    (``metric``, ``flip``, ``center_crop``, ``low_light_seed``, ...).
    The full metrics of every evaluation are kept in ``self.results``.
    ``model``: the model to score (default: the one being fitted), e.g. the
    embedding backbone inside a classification training graph.
    """

    KEYS = ("accuracy", "auc", "eer")

    def __init__(self, source, pairs, every: int = 1, prefix: str = "verify_", model=None, **score_kwargs):
        super().__init__()
        self.scored_model = model
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.source = open_image_source(source)
        self.pairs = parse_pairs(pairs) if not isinstance(pairs, (list, tuple)) else list(pairs)
        self.every = every
        self.prefix = prefix
        self.score_kwargs = score_kwargs
        self.results: list[tuple[int, dict]] = []

    def _due(self, epoch: int) -> bool:
        last = (self.params or {}).get("epochs")
        return (epoch + 1) % self.every == 0 or (last is not None and epoch + 1 == last)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if not self._due(epoch):
            for k in self.KEYS:
                logs[self.prefix + k] = math.nan
            return
        t0 = time.perf_counter()
        scored = self.scored_model if self.scored_model is not None else self.model
        m = evaluate_pairs(scored, self.source, self.pairs, verbose=0, **self.score_kwargs).metrics
        acc = m["accuracy_mean"] if m.get("folds", 1) > 1 else m["best_threshold_accuracy"]
        logs[self.prefix + "accuracy"] = acc
        logs[self.prefix + "auc"] = math.nan if m["auc"] is None else m["auc"]
        logs[self.prefix + "eer"] = math.nan if m["eer_percent"] is None else m["eer_percent"]
        self.results.append((epoch + 1, m))
        logger.info("epoch %d verification on %d pairs: accuracy %.4f, AUC %s, EER %s (%.1f s)",
                    epoch + 1, m["pairs_accounting"]["evaluated"], acc, m["auc"], m["eer_percent"],
                    time.perf_counter() - t0)


class StopOnNaN(keras.callbacks.Callback):
    """Stop training at the first batch whose loss is NaN or infinite, and remember where.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records ``self.stopped``
    (``{"epoch": 1-based, "step": 1-based in the epoch, "global_step": ..., "loss": ...}``)
    so that :class:`~kerasface.training.run_folder.RunFolderWriter` and
    :class:`RunBackup` (which check :attr:`tripped`) keep the last good
    model and backup instead of saving the NaN weights at the end of that epoch.
    """

    def __init__(self):
        super().__init__()
        self.stopped: dict | None = None
        self._epoch = 0
        self._steps_before = 0

    @property
    def tripped(self) -> bool:
        return self.stopped is not None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.stopped is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            steps = (self.params or {}).get("steps") or 0
            self.stopped = {"epoch": self._epoch + 1, "step": batch + 1,
                            "global_step": self._epoch * steps + batch + 1, "loss": loss}
            logger.error("loss is %s at epoch %d, step %d: stopping; the run folder keeps the last good epoch",
                         loss, self._epoch + 1, batch + 1)
            self.model.stop_training = True

    def message(self) -> str:
        s = self.stopped or {}
        epoch = s.get("epoch") or 1
        kept = f"; the run folder keeps the model of epoch {epoch - 1}" if epoch > 1 else ""  # none in epoch 1
        return (f"training stopped: the loss became {s.get('loss')} at epoch {s.get('epoch')}, step {s.get('step')} "
                f"(global step {s.get('global_step')}){kept}")


class RunBackup(keras.callbacks.Callback):
    """Resumable training state: ``keras.callbacks.BackupAndRestore`` made kill-safe.

    After every epoch it writes ``<backup_dir>/epoch-NNNN.weights.h5`` (model and
    optimizer variables) through a temporary file, then ``state.json``
    (``{"epoch": N, "weights": "epoch-NNNN.weights.h5"}``) atomically, then
    removes older weight files.  A kill at any point therefore leaves
    ``state.json`` naming a complete weights file of the same epoch (Keras's own
    callback writes the weights and the epoch number in place, one after the
    other, so a kill between them resumes from a mismatched pair).  On
    ``on_train_begin`` it restores that state and sets the model's initial
    epoch, so ``fit`` runs only the remaining epochs.  ``nan_guard``: a
    :class:`StopOnNaN` whose trip stops further saving.  The folder is
    deleted when training ends normally (``delete_on_end``); the trainers turn
    that off and delete it (:meth:`delete`) only once ``metrics.json`` says the
    run is complete, so a kill during the final evaluation loses nothing.
    """

    STATE = "state.json"

    def __init__(self, backup_dir, nan_guard: StopOnNaN | None = None, delete_on_end: bool = True):
        super().__init__()
        from pathlib import Path

        self.backup_dir = Path(backup_dir)
        self.nan_guard = nan_guard
        self.delete_on_end = delete_on_end
        self.restored_epoch = 0

    @classmethod
    def saved_epoch(cls, backup_dir) -> int:
        """Epochs finished according to the backup in ``backup_dir`` (0 when there is none)."""
        import json
        from pathlib import Path

        p = Path(backup_dir) / cls.STATE
        if not p.is_file():
            return 0
        state = json.loads(p.read_text())
        return int(state["epoch"]) if (Path(backup_dir) / state["weights"]).is_file() else 0

    def restore(self, model=None) -> int:
        """Load the backed-up weights (and optimizer state) into ``model``; returns the epochs done (0: none)."""
        import json

        model = model if model is not None else self.model
        p = self.backup_dir / self.STATE
        if not p.is_file():
            return 0
        state = json.loads(p.read_text())
        weights = self.backup_dir / state["weights"]
        if not weights.is_file():
            raise FileNotFoundError(f"{p} names {weights.name}, which is missing; delete {self.backup_dir} "
                                    "to start over")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        load_weights(model, weights)  # also a backup written before the fused batch norms
        self.restored_epoch = int(state["epoch"])
        logger.info("resuming from the backup of epoch %d in %s", self.restored_epoch, self.backup_dir)
        return self.restored_epoch

    def on_train_begin(self, logs=None):
        if self.restore():
            self.model._initial_epoch = self.restored_epoch  # as keras.callbacks.BackupAndRestore does

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.tripped:
            return
        self.save(epoch + 1)

    def save(self, epochs_done: int, model=None) -> None:
        """Back up ``model`` (default: the callback's) as the state after ``epochs_done`` epochs."""
        model = model if model is not None else self.model
        epoch = epochs_done - 1

        name = f"epoch-{epoch + 1:04d}.weights.h5"
        with atomic_path(self.backup_dir / name, suffix=".weights.h5") as tmp:
            model.save_weights(str(tmp))
        write_json(self.backup_dir / self.STATE, {"epoch": epoch + 1, "weights": name})
        for old in self.backup_dir.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink()

    def on_train_end(self, logs=None):
        stopped = self.nan_guard is not None and self.nan_guard.tripped
        if self.delete_on_end and not stopped:
            self.delete()

    def delete(self) -> None:
        import shutil

        if self.backup_dir.exists():
            shutil.rmtree(self.backup_dir)


class LogLearningRate(keras.callbacks.Callback):
    """``learning_rate`` (the schedule's value at the end of the epoch) into the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


#: ``l2_normalize`` takes the epsilon under the square root: norms floored at 1e-12
_UNIT_EPS = 1e-24


def embed_faces(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``model``'s embeddings of uint8 ``images`` (scaled by :func:`~kerasface.ops.normalize_faces`), in
    batches, in inference mode, as one NumPy array."""
    return np.concatenate([
        keras.ops.convert_to_numpy(model(normalize_faces(images[b:b + batch_size]), training=False))
        for b in range(0, len(images), batch_size)])


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
        e = embed_faces(self.backbone, self.images, self.batch_size)
        plain = keras.ops.convert_to_numpy(self.head(e))
        with_margin = (keras.ops.convert_to_numpy(self.head(e, labels=self.labels))
                       if isinstance(self.head, MarginHead) else plain)
        z = with_margin - with_margin.max(axis=1, keepdims=True)
        ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), self.labels]
        return {"val_accuracy": float((plain.argmax(axis=1) == self.labels).mean()), "val_loss": float(ce.mean())}

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and len(self.images):
            logs.update(self.evaluate())


class HeldOutTeacherCosine(keras.callbacks.Callback):
    """``val_teacher_cosine``: the mean cosine similarity between the student's embeddings of held-out faces
    (uint8 ``images``, scaled by :func:`~kerasface.ops.normalize_faces`) and the teacher's embeddings of the
    same faces (``targets`` ``[n, D]``, any norm), after every epoch (1 = the student points where the
    teacher does). The student model must give ``D``-d embeddings (its projection included)."""

    def __init__(self, student: keras.Model, images: np.ndarray, targets: np.ndarray, batch_size: int = 64):
        super().__init__()
        self.student, self.images = student, images
        self.targets = l2_normalize(np.asarray(targets, np.float32), epsilon=_UNIT_EPS)
        self.batch_size = batch_size

    def evaluate(self) -> float:
        e = l2_normalize(embed_faces(self.student, self.images, self.batch_size).astype(np.float32),
                         epsilon=_UNIT_EPS)
        return float(np.mean(np.sum(e * self.targets, axis=1)))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and len(self.images):
            logs["val_teacher_cosine"] = self.evaluate()
