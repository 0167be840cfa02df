"""Penalties on the embedding itself rather than on a prediction (keras.ops only, float32).

* :func:`prelogit_norm_loss`: ``mean_i (sum_d (|x_id| + eps)^p)^(1/p)``,
  davidsandberg's ``prelogits_norm`` (p = 1, eps = 1e-4; the eps keeps the
  value and gradient finite at zero). Report 002 weights it 1e-5.

It is an activity regulariser of the pre-logits (it needs no label and no
target), hence its own module beside the objectives.
"""

from __future__ import annotations

from keras import ops

__all__ = ["prelogit_norm_loss"]


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def prelogit_norm_loss(embeddings, p=1.0, epsilon=1e-4):
    """``mean_i (sum_d (|x_id| + epsilon)^p)^(1/p)``: mean L_p norm of the pre-logits (p >= 1)."""
    if p < 1.0:
        raise ValueError(f"p must be >= 1, got {p}")
    x = ops.abs(_f32(embeddings)) + epsilon
    if p == 1.0:
        norms = ops.sum(x, axis=-1)
    else:
        norms = ops.power(ops.sum(ops.power(x, p), axis=-1), 1.0 / p)
    return ops.mean(norms)
