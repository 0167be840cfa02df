"""Losses and metrics reading the triplet graph's stacked distances ``(batch, 2, 1)``.

``y_pred[:, 0, 0]`` is ``d_pos = d(anchor, positive)`` and ``y_pred[:, 1, 0]``
``d_neg = d(anchor, negative)``, as produced by
:func:`kerasface.models.TripletModel`. ``y_true`` is ignored (pass any array
with one row per triplet, e.g. zeros): the triplet itself is the label.

Each loss returns one value per triplet and lets Keras reduce them (the
default ``"sum_over_batch_size"`` reduction is the report's ``mean``), so
sample weights and distribution strategies behave as for built-in losses.

``squared=True`` squares the distances read from the stack before combining
them: use it with a model whose distance layers are not squared to get the
FaceNet paper's ``||a - p||^2 - ||a - n||^2 + margin``. (A model built with
``TripletModel(..., squared=True)`` already outputs squared distances; then
keep ``squared=False`` here.)
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "TripletHingeLoss",
    "TripletDifferenceLoss",
    "TripletAccuracy",
    "TripletDistanceMean",
]


def _register(cls):
    return keras.saving.register_keras_serializable(package="kerasface")(cls)


def _split(y_pred, squared):
    y_pred = ops.cast(y_pred, "float32")
    pos = ops.reshape(y_pred[:, 0], (-1,))
    neg = ops.reshape(y_pred[:, 1], (-1,))
    if squared:
        pos, neg = ops.square(pos), ops.square(neg)
    return pos, neg


@_register
class TripletHingeLoss(keras.losses.Loss):
    """``max(0, d_pos - d_neg + margin)`` per triplet (mean over the batch by default).

    Args:
        margin: the hinge margin. With unit-length embeddings a distance is at
            most 2 (a squared distance at most 4): a margin at or above that
            can never be met: every triplet stays active and, with plain
            distances, the loss cannot fall below ``margin - 2``.
        squared: square the stacked distances first.
    """

    def __init__(self, margin=0.2, squared=False, name="triplet_hinge", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.squared = bool(squared)

    def call(self, y_true, y_pred):
        pos, neg = _split(y_pred, self.squared)
        return ops.relu(pos - neg + self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, squared=self.squared)
        return config


@_register
class TripletDifferenceLoss(keras.losses.Loss):
    """``d_pos - d_neg`` per triplet (the report's plain ``mean(d_pos - d_neg)``).

    Unbounded below unless the embeddings are bounded (unit length: the loss
    lies in [-2, 2], squared [-4, 4]); it never stops pushing easy triplets.
    """

    def __init__(self, squared=False, name="triplet_difference", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.squared = bool(squared)

    def call(self, y_true, y_pred):
        pos, neg = _split(y_pred, self.squared)
        return pos - neg

    def get_config(self):
        config = super().get_config()
        config.update(squared=self.squared)
        return config


@_register
class TripletAccuracy(keras.metrics.Mean):
    """Fraction of triplets with ``d_pos < d_neg`` (strictly).

    Collapsed embeddings (all distances equal) score 0, which is what
    report 004 saw with margin 1.
    """

    def __init__(self, name="triplet_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        pos, neg = _split(y_pred, False)
        return super().update_state(ops.cast(pos < neg, "float32"), sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@_register
class TripletDistanceMean(keras.metrics.Mean):
    """Mean positive (``which="pos"``) or negative (``"neg"``) distance of the stack.

    A negative distance mean falling towards 0 is the signature of the
    embedding collapse report 004 met (distances around 1e-7).
    """

    def __init__(self, which="neg", name=None, dtype=None):
        if which not in ("pos", "neg"):
            raise ValueError(f"which must be 'pos' or 'neg', got {which!r}")
        super().__init__(name=name or f"mean_{which}_dist", dtype=dtype)
        self.which = which

    def update_state(self, y_true, y_pred, sample_weight=None):
        pos, neg = _split(y_pred, False)
        return super().update_state(pos if self.which == "pos" else neg, sample_weight=sample_weight)

    def get_config(self):
        return {"which": self.which, "name": self.name, "dtype": self.dtype}
