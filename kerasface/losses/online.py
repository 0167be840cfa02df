"""Online triplet mining inside a batch of P identities x K images (keras.ops only).

These losses take ``y_true`` = integer identity labels, shape ``(batch,)`` or
``(batch, 1)``, and ``y_pred`` = embeddings ``(batch, dim)`` (the output of
the embedding model itself, not of the triplet graph), form triplets inside
the batch and return one scalar. Everything is computed in float32.

Distances: :func:`pairwise_distances`, from explicit differences (no
``|x|^2 - 2xy + |y|^2`` cancellation, so identical embeddings give exactly 0
before the epsilon); the non-squared form is ``sqrt(max(d2, epsilon))`` off
the diagonal and exactly 0 on it, so its gradient is finite even when every
embedding is the same. Memory is ``batch^2 * dim`` floats for the distances
and ``batch^3`` for batch-all / semi-hard (batch 128: 8 MB).

Anchors (pairs) without a positive or without a negative in the batch are
left out of the average; a batch with no valid triplet at all (one identity,
or K = 1) gives loss 0 with a zero gradient, never NaN. This is where the
package departs from TensorFlow Addons (see ``docs/tfa_migration.md``).

Labels go through Keras's loss-input conversion to float32, which is exact
for identity ids below 2**24.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = [
    "pairwise_distances",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "semi_hard_triplet_loss",
    "BatchAllTripletLoss",
    "BatchHardTripletLoss",
    "SemiHardTripletLoss",
]


def _register(cls):
    return keras.saving.register_keras_serializable(package="kerasface")(cls)


def pairwise_distances(embeddings, squared=False, epsilon=1e-12):
    """``(n, dim)`` -> ``(n, n)`` euclidean distances (squared, or epsilon-safe sqrt)."""
    e = ops.cast(embeddings, "float32")
    d2 = ops.sum(ops.square(e[:, None, :] - e[None, :, :]), axis=-1)
    if squared:
        return d2
    off_diagonal = 1.0 - ops.eye(ops.shape(e)[0], dtype="float32")
    return ops.sqrt(ops.maximum(d2, epsilon)) * off_diagonal


def _masks(labels):
    """(positive pairs a != p with the same label, negative pairs) as bool (n, n)."""
    labels = ops.reshape(labels, (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    return ops.logical_and(same, not_self), ops.logical_not(same)


def _safe_mean(values, mask):
    mask = ops.cast(mask, "float32")
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)


def batch_all_triplet_loss(labels, embeddings, margin=0.2, squared=False, average="positive",
                           epsilon=1e-12):
    """Mean of ``max(0, d_ap - d_an + margin)`` over every valid triplet of the batch.

    ``average="positive"`` divides by the number of triplets with a positive
    loss (Hermans et al.'s "batch all, non-zero"), ``"all"`` by the number of
    valid triplets ``(a, p, n)``: ``a != p`` same identity, ``n`` another.
    """
    if average not in ("positive", "all"):
        raise ValueError(f"average must be 'positive' or 'all', got {average!r}")
    d = pairwise_distances(embeddings, squared, epsilon)
    pos_mask, neg_mask = _masks(labels)
    valid = ops.logical_and(pos_mask[:, :, None], neg_mask[:, None, :])
    losses = ops.relu(d[:, :, None] - d[:, None, :] + margin) * ops.cast(valid, "float32")
    if average == "all":
        count = ops.sum(ops.cast(valid, "float32"))
    else:
        count = ops.sum(ops.cast(losses > 0.0, "float32"))
    return ops.sum(losses) / ops.maximum(count, 1.0)


def batch_hard_triplet_loss(labels, embeddings, margin=0.2, squared=False, soft=False,
                            epsilon=1e-12, average="valid"):
    """Per anchor: hardest (largest) positive and hardest (smallest) negative distance.

    Loss per anchor ``max(0, d_hard_pos - d_hard_neg + margin)``, or with
    ``soft=True`` ``softplus(d_hard_pos - d_hard_neg)`` (no margin).
    ``average="valid"``: mean over anchors that have at least one positive and
    one negative. ``average="all"``: mean over every anchor, an anchor without a
    positive counting ``d_hard_pos = 0`` and one without a negative
    ``d_hard_neg`` = its largest distance (omoindrot's ``batch_hard_triplet_loss``,
    which report 002's code copies: in a random batch with few positives most
    anchors then only push their nearest other identity beyond the margin).
    """
    if average not in ("valid", "all"):
        raise ValueError(f"average must be 'valid' or 'all', got {average!r}")
    d = pairwise_distances(embeddings, squared, epsilon)
    pos_mask, neg_mask = _masks(labels)
    hardest_pos = ops.max(ops.where(pos_mask, d, 0.0), axis=1)
    if average == "all":
        hardest_neg = ops.min(ops.where(neg_mask, d, ops.max(d, axis=1, keepdims=True)), axis=1)
    else:
        fill = ops.stop_gradient(ops.max(d)) + 1.0
        hardest_neg = ops.min(ops.where(neg_mask, d, fill), axis=1)
    gap = hardest_pos - hardest_neg
    losses = ops.softplus(gap) if soft else ops.relu(gap + margin)
    if average == "all":
        return ops.mean(losses)
    valid = ops.logical_and(ops.any(pos_mask, axis=1), ops.any(neg_mask, axis=1))
    return _safe_mean(losses, valid)


def semi_hard_triplet_loss(labels, embeddings, margin=0.2, squared=False, epsilon=1e-12):
    """FaceNet's semi-hard rule over every anchor-positive pair of the batch.

    For each ordered pair ``(a, p)`` (same identity, ``a != p``) the negative
    is the closest one that is still farther than the positive
    (``d_an > d_ap``, smallest such ``d_an``); if there is none, the farthest
    negative of the anchor (largest ``d_an``). Loss per pair
    ``max(0, d_ap - d_an + margin)``, mean over pairs whose anchor has a
    negative (the semantics of ``tfa.losses.TripletSemiHardLoss``'s code).
    """
    d = pairwise_distances(embeddings, squared, epsilon)
    pos_mask, neg_mask = _masks(labels)
    d_ap = d[:, :, None]  # (a, p, 1)
    d_an = d[:, None, :]  # (a, 1, n)
    outside = ops.logical_and(neg_mask[:, None, :], d_an > d_ap)  # (a, p, n)
    fill = ops.stop_gradient(ops.max(d)) + 1.0
    semi_hard = ops.min(ops.where(outside, d_an, fill), axis=2)  # (a, p)
    farthest = ops.max(ops.where(neg_mask, d, 0.0), axis=1)  # (a,)
    chosen = ops.where(ops.any(outside, axis=2), semi_hard, farthest[:, None])
    losses = ops.relu(d - chosen + margin)
    valid = ops.logical_and(pos_mask, ops.any(neg_mask, axis=1)[:, None])
    return _safe_mean(losses, valid)


class _MiningLoss(keras.losses.Loss):
    _fn = None

    def __init__(self, margin=0.2, squared=False, epsilon=1e-12, name=None,
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.squared = bool(squared)
        self.epsilon = float(epsilon)

    def _options(self):
        return {}

    def call(self, y_true, y_pred):
        return type(self)._fn(y_true, y_pred, margin=self.margin, squared=self.squared,
                              epsilon=self.epsilon, **self._options())

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, squared=self.squared, epsilon=self.epsilon,
                      **self._options())
        return config


@_register
class BatchAllTripletLoss(_MiningLoss):
    """:func:`batch_all_triplet_loss` as a Keras loss (``y_true`` labels, ``y_pred`` embeddings)."""

    _fn = staticmethod(batch_all_triplet_loss)

    def __init__(self, margin=0.2, squared=False, average="positive", epsilon=1e-12,
                 name="batch_all_triplet", **kwargs):
        if average not in ("positive", "all"):
            raise ValueError(f"average must be 'positive' or 'all', got {average!r}")
        super().__init__(margin=margin, squared=squared, epsilon=epsilon, name=name, **kwargs)
        self.average = average

    def _options(self):
        return {"average": self.average}


@_register
class BatchHardTripletLoss(_MiningLoss):
    """:func:`batch_hard_triplet_loss` as a Keras loss (the role of ``tfa.losses.TripletHardLoss``)."""

    _fn = staticmethod(batch_hard_triplet_loss)

    def __init__(self, margin=0.2, squared=False, soft=False, epsilon=1e-12,
                 name="batch_hard_triplet", **kwargs):
        super().__init__(margin=margin, squared=squared, epsilon=epsilon, name=name, **kwargs)
        self.soft = bool(soft)

    def _options(self):
        return {"soft": self.soft}


@_register
class SemiHardTripletLoss(_MiningLoss):
    """:func:`semi_hard_triplet_loss` as a Keras loss (the role of ``tfa.losses.TripletSemiHardLoss``)."""

    _fn = staticmethod(semi_hard_triplet_loss)

    def __init__(self, margin=0.2, squared=False, epsilon=1e-12, name="semi_hard_triplet",
                 **kwargs):
        super().__init__(margin=margin, squared=squared, epsilon=epsilon, name=name, **kwargs)
