"""A model's embeddings of face crops, and how two embeddings compare under its FaceSpec."""

from __future__ import annotations

import numpy as np

from kerasface.evaluation.embeddings import normalize_pixels
from kerasface.face_spec import FaceSpec
from kerasface.ops import l2_normalize
from kerasface.recognition.loading import FaceModel

__all__ = ["compare", "embed_crops"]


def embed_crops(model: FaceModel, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings ``[N, D]`` of uint8 face crops ``[N, h, w, 3]``, scaled as ``model.spec``
    says (``in-model``: the 0..255 values as they are)."""
    crops = np.asarray(crops)
    if crops.ndim != 4:
        raise ValueError(f"expected face crops [N, h, w, 3], got shape {crops.shape}")
    if len(crops) == 0:
        return np.zeros((0, model.dim), np.float32)
    out = []
    scaling = model.spec.input_scaling
    for i in range(0, len(crops), batch_size):
        batch = crops[i:i + batch_size]
        x = batch.astype(np.float32) if scaling == "in-model" else np.asarray(normalize_pixels(batch, scaling))
        out.append(np.asarray(model.model(x, training=False), np.float32))
    return l2_normalize(np.concatenate(out).reshape(len(crops), -1))


def compare(spec: FaceSpec, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The ``spec.metric`` between unit embeddings ``a`` ``[D]`` or ``[N, D]`` and ``b`` (broadcast): cosine
    similarity (higher = more alike) or l2 distance (lower = more alike)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if spec.metric == "cosine":
        return np.sum(a * b, axis=-1)
    return np.sqrt(np.sum(np.square(a - b), axis=-1))


