"""Embedding distillation: the student's unit embedding regresses a frozen teacher's unit embedding.

keras.ops only, computed in float32, the teacher's side held constant (``stop_gradient``).
Both embeddings are L2-normalised first (:func:`kerasface.ops.l2_normalize`: a zero row stays
zero, so the gradient at a zero embedding is finite), then per sample

* ``metric="cosine"``: ``1 - <s/|s|, t/|t|>`` (0 when the directions agree, 2 when opposite);
* ``metric="l2"``: ``||s/|s| - t/|t|||^2`` (squared euclidean distance of the unit vectors),

averaged over the batch. For unit vectors ``||a - b||^2 = 2 (1 - <a, b>)``, so the two metrics
differ by a factor of 2 in value and gradient (``l2`` = 2 x ``cosine``), except for a zero row,
which normalises to zero: both then give 1. ``l2`` is report 002's embedding term taken on
normalised vectors, ``cosine`` the quantity that cosine verification scores.
Unlike :func:`kerasface.losses.embedding_l2_loss` (raw embeddings), only the direction is
learned: the teacher's verification compares directions, and the student's norm stays free.
"""

from __future__ import annotations

from keras import ops

from kerasface.ops import l2_normalize

__all__ = ["EMBEDDING_DISTILL_METRICS", "embedding_distillation_loss"]

#: The per-sample forms of :func:`embedding_distillation_loss`.
EMBEDDING_DISTILL_METRICS = ("cosine", "l2")


def embedding_distillation_loss(student, teacher, metric: str = "cosine", sample_weight=None):
    """Mean over the batch of the ``metric`` between the unit student and unit teacher embeddings ``[B, D]``.

    ``sample_weight`` (``[B]``, optional) weights each sample's term (the mean is still over ``B``).
    """
    if metric not in EMBEDDING_DISTILL_METRICS:
        raise ValueError(f"metric must be one of {EMBEDDING_DISTILL_METRICS}, got {metric!r}")
    s = l2_normalize(ops.cast(ops.convert_to_tensor(student), "float32"))
    t = ops.stop_gradient(l2_normalize(ops.cast(ops.convert_to_tensor(teacher), "float32")))
    if metric == "cosine":
        per_sample = 1.0 - ops.sum(s * t, axis=-1)
    else:
        per_sample = ops.sum(ops.square(s - t), axis=-1)
    if sample_weight is not None:
        per_sample = per_sample * ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.mean(per_sample)
