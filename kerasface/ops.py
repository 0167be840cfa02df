"""The two input/output contracts every kerasface model shares, written once.

- :func:`normalize_faces`: uint8-range RGB faces -> the float32 ``(x - 127.5) / 128``
  every backbone of this package is trained on (values in [-0.996, 0.996]).
- :func:`l2_normalize`: ``x / sqrt(max(sum(x^2), epsilon))`` along the last axis, finite
  (value and gradient) for a zero vector.

Both take NumPy arrays as well as tensors: with a NumPy array they return a NumPy
array (no framework is touched), with a tensor they use ``keras.ops``, so models,
losses, the data pipelines and the evaluation all call the same function.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FACE_OFFSET", "FACE_SCALE", "normalize_faces", "l2_normalize"]

#: ``normalize_faces(x) = (x - FACE_OFFSET) / FACE_SCALE``
FACE_OFFSET = 127.5
FACE_SCALE = 128.0


def normalize_faces(x):
    """``(x - 127.5) / 128`` as float32, for pixel values in [0, 255] (uint8 or float)."""
    if isinstance(x, (np.ndarray, np.generic, int, float, list, tuple)):
        return (np.asarray(x, np.float32) - np.float32(FACE_OFFSET)) / np.float32(FACE_SCALE)
    from keras import ops

    return (ops.cast(x, "float32") - FACE_OFFSET) / FACE_SCALE


def l2_normalize(x, axis: int = -1, epsilon: float = 1e-12):
    """``x / sqrt(max(sum(x^2, axis), epsilon))``: unit rows, zero rows stay zero (no NaN)."""
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        x = np.asarray(x, np.float32)
        sq = np.sum(np.square(x), axis=axis, keepdims=True)
        return x / np.sqrt(np.maximum(sq, np.float32(epsilon)))
    from keras import ops

    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))
