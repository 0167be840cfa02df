"""The margin-softmax family on cosine logits (keras.ops only).

With ``cos`` the cosine between an L2-normalised embedding and the
L2-normalised class weights, the target class ``y`` gets (other classes keep
``s * cos``):

* ``"normalized"`` (NormFace): ``s * cos``;
* ``"cosface"`` / ``"amsoftmax"`` (AM-softmax, CosFace): ``s * (cos - m)``;
* ``"arcface"``: ``s * cos(theta + m)`` with ``cos(theta + m) = cos*cos(m) -
  sin*sin(m)`` and ``sin = sqrt(max(1 - cos^2, eps))``, so neither the value
  nor the gradient is NaN at ``|cos| = 1`` (the plain ``sqrt`` has an infinite
  derivative at 0). Where ``theta + m > pi`` (``cos < cos(pi - m)``),
  ``cos(theta + m)`` would rise again with theta; insightface's fallback
  ``cos - m * sin(m)`` is used there instead (it keeps the target logit
  decreasing in theta). With ``easy_margin=True`` the margin applies only
  where ``cos > 0`` and the logit is ``cos`` elsewhere.

The result is logits for ``sparse categorical cross-entropy (from_logits)``;
:class:`kerasface.models.heads.MarginHead` is the layer that holds the class
weights and calls :func:`margin_logits`.
"""

from __future__ import annotations

import math

from keras import ops

__all__ = ["MARGIN_KINDS", "margin_logits", "arcface_target"]

MARGIN_KINDS = ("normalized", "cosface", "amsoftmax", "arcface")


def arcface_target(cos, margin, easy_margin=False, epsilon=1e-12):
    """``cos(theta + m)`` of a cosine, numerically safe, with the threshold fallback."""
    sin = ops.sqrt(ops.maximum(1.0 - ops.square(cos), epsilon))
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    if easy_margin:
        return ops.where(cos > 0.0, phi, cos)
    threshold = math.cos(math.pi - margin)
    return ops.where(cos > threshold, phi, cos - margin * math.sin(margin))


def margin_logits(cos, labels, kind, scale, margin, easy_margin=False, epsilon=1e-12):
    """Logits of the margin family from cosines ``(batch, classes)`` and integer labels.

    ``labels=None`` gives ``scale * cos`` (no margin: inference). Cosines are
    clipped to ``[-1, 1]`` first (a normalised dot product may exceed 1 by
    rounding).
    """
    if kind not in MARGIN_KINDS:
        raise ValueError(f"kind must be one of {MARGIN_KINDS}, got {kind!r}")
    cos = ops.clip(cos, -1.0, 1.0)
    if labels is None or kind == "normalized":
        return scale * cos
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    is_target = ops.one_hot(labels, ops.shape(cos)[-1], dtype="float32") > 0.5
    if kind == "arcface":
        target = arcface_target(cos, margin, easy_margin, epsilon)
    else:
        target = cos - margin
    return scale * ops.where(is_target, target, cos)
