"""Training callbacks: verification metrics every N epochs, logged to the history."""

from __future__ import annotations

import logging
import math
import time

import keras

from kerasface.data.lfw import open_image_source, parse_pairs

__all__ = ["VerificationCallback"]

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
    """

    KEYS = ("accuracy", "auc", "eer")

    def __init__(self, source, pairs, every: int = 1, prefix: str = "verify_", **score_kwargs):
        super().__init__()
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
        from kerasface.evaluation.verification import evaluate_pairs

        t0 = time.perf_counter()
        m = evaluate_pairs(self.model, self.source, self.pairs, verbose=0, **self.score_kwargs).metrics
        acc = m["accuracy_mean"] if m.get("folds", 1) > 1 else m["best_threshold_accuracy"]
        logs[self.prefix + "accuracy"] = acc
        logs[self.prefix + "auc"] = math.nan if m["auc"] is None else m["auc"]
        logs[self.prefix + "eer"] = math.nan if m["eer_percent"] is None else m["eer_percent"]
        self.results.append((epoch + 1, m))
        logger.info("epoch %d verification on %d pairs: accuracy %.4f, AUC %s, EER %s (%.1f s)",
                    epoch + 1, m["pairs_accounting"]["evaluated"], acc, m["auc"], m["eer_percent"],
                    time.perf_counter() - t0)
