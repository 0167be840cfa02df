"""Embeddings of a list of images for any saved embedding model, streamed through tf.data.

Images are read from an :class:`~kerasface.data.lfw.ImageSource` (folder or
zip), decoded on a small thread pool, centre-cropped and resized with OpenCV,
normalised, batched and run through ``model.predict``: memory holds one
prefetch window of images, never the whole list.

Flip test-time augmentation: the embedding of the image and of its horizontal
mirror are summed, then L2-normalised (the InsightFace / ArcFace evaluation
rule). Without flip the embeddings are L2-normalised too unless
``l2_normalize=False``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from kerasface.data.images import CorruptImageError, read_face
from kerasface.data.lfw import open_image_source
from kerasface.data.lowlight import low_light
from kerasface.data.pairs import stable_image_id

__all__ = [
    "NORMALIZATIONS",
    "normalize_pixels",
    "embedding_submodel",
    "model_kind",
    "model_image_size",
    "Embeddings",
    "extract_embeddings",
    "embed_views",
    "iter_images",
]

logger = logging.getLogger("kerasface.evaluation")

#: Pixel normalisations a model may expect. ``kerasface``: every model of this
#: package, ``(x - 127.5) / 128``; ``unit``: ``x / 255``; ``raw``: ``x`` as 0..255 floats.
NORMALIZATIONS = ("kerasface", "unit", "raw")


def normalize_pixels(x, normalization: str = "kerasface"):
    """uint8 (or 0..255 float) images -> float32 in the range the model was trained on
    (``kerasface`` is :func:`kerasface.data.pairs.normalize_images`)."""
    x = tf.cast(x, tf.float32)
    if normalization == "kerasface":
        return (x - 127.5) / 128.0
    if normalization == "unit":
        return x / 255.0
    if normalization == "raw":
        return x
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def model_kind(model: keras.Model) -> str:
    """``"embedding"`` (one input), ``"verifier"`` (two inputs -> 2 probabilities) or ``"triplet"`` (three inputs)."""
    n = len(model.inputs)
    if n == 1:
        return "embedding"
    if n == 2:
        shape = tuple(model.outputs[0].shape)
        if shape[-1] != 2:
            raise ValueError(f"a two-input model must output [different, same] probabilities, got shape {shape}")
        return "verifier"
    if n == 3:
        return "triplet"
    raise ValueError(f"cannot evaluate a model with {n} inputs (expected 1, 2 or 3)")


def embedding_submodel(model: keras.Model) -> keras.Model:
    """The embedding model inside ``model``: itself (one input) or the shared backbone of a
    Siamese verifier / triplet graph (the nested single-input ``keras.Model`` layer)."""
    if len(model.inputs) == 1:
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and len(layer.inputs) == 1:
            return layer
    raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and no nested single-input embedding model")


def model_image_size(model: keras.Model, default: int | None = None) -> int:
    """Side of the square input the model expects (``default`` when the model accepts any size)."""
    shape = tuple(model.inputs[0].shape)
    h, w = shape[1], shape[2]
    if h is not None and w is not None:
        if h != w:
            raise ValueError(f"only square inputs are supported, model takes {h}x{w}")
        return int(h)
    if default is None:
        raise ValueError("the model accepts any input size: pass image_size")
    return int(default)


def _load_one(source, rel: str, size: int, center_crop: float):
    try:
        return read_face(source, rel, size, center_crop), None
    except CorruptImageError as e:
        return None, str(e)


def iter_images(source, relpaths: Sequence[str], size: int, center_crop: float = 1.0, workers: int = 4, window: int = 256, bad: list | None = None):
    """Yield ``(index, uint8 image)`` for ``relpaths`` in order, decoded ``window`` at a time on ``workers`` threads.

    Corrupt images are logged, appended to ``bad`` as ``(index, relpath, reason)``
    and yield a black image so that positions stay aligned.
    """
    source = open_image_source(source)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(relpaths), window):
            chunk = relpaths[start:start + window]
            for k, (img, err) in enumerate(pool.map(lambda r: _load_one(source, r, size, center_crop), chunk)):
                if err is not None:
                    logger.warning("skipping %s", err)
                    if bad is not None:
                        bad.append((start + k, chunk[k], err))
                    img = np.zeros((size, size, 3), np.uint8)
                yield start + k, img


@dataclass
class Embeddings:
    """``vectors[i]`` is the embedding of ``relpaths[i]``; ``ok[i]`` is False for an undecodable image."""

    vectors: np.ndarray
    relpaths: list
    ok: np.ndarray
    flip: bool
    l2_normalized: bool

    def index(self) -> dict:
        return {r: i for i, r in enumerate(self.relpaths)}


def extract_embeddings(model: keras.Model, source, relpaths: Sequence[str], *, image_size: int | None = None, center_crop: float = 1.0, normalization: str = "kerasface", flip: bool = False, l2_normalize: bool = True, low_light_seed: int | None = None, batch_size: int = 64, verbose="auto") -> Embeddings:
    """Embed every image of ``relpaths`` (duplicates embedded once) with ``model``.

    ``model``: a single-input embedding model, or a verifier / triplet graph whose
    shared backbone is used (:func:`embedding_submodel`). ``image_size``
    defaults to the model's input size. ``low_light_seed``: darken every image
    with :func:`~kerasface.data.lowlight.low_light` keyed by its stable id (the
    low-light experiment's fixed dark set). ``verbose`` goes to ``model.predict``
    (its progress bar).
    """
    unique, views, ok = embed_views(model, source, relpaths, mirrored=flip, image_size=image_size,
                                    center_crop=center_crop, normalization=normalization,
                                    low_light_seed=low_light_seed, batch_size=batch_size, verbose=verbose)
    vec = views[0] + views[1] if flip else views[0]
    if l2_normalize or flip:
        norms = np.linalg.norm(vec, axis=1, keepdims=True)
        vec = vec / np.maximum(norms, 1e-12)
    return Embeddings(vec, unique, ok, flip, bool(l2_normalize or flip))


def embed_views(model: keras.Model, source, relpaths: Sequence[str], *, mirrored: bool = False, image_size: int | None = None, center_crop: float = 1.0, normalization: str = "kerasface", low_light_seed: int | None = None, batch_size: int = 64, verbose="auto") -> tuple[list, list, np.ndarray]:
    """Raw model outputs for the distinct images of ``relpaths``: ``(relpaths, views, ok)``.

    ``views[0]`` embeds the images as they are; with ``mirrored`` ``views[1]``
    embeds their horizontal mirrors. Nothing is normalised. ``ok[i]`` is False
    for an undecodable image (its rows are the embedding of a black image).
    """
    model = embedding_submodel(model)
    size = model_image_size(model, image_size)
    if image_size is not None and image_size != size:
        raise ValueError(f"the model takes {size}x{size} inputs, image_size={image_size} was asked")
    normalize_pixels(np.zeros((1, 1, 1, 3), np.uint8), normalization)  # validates the name
    source = open_image_source(source)
    unique = list(dict.fromkeys(relpaths))
    if not unique:
        raise ValueError("no images to embed")
    bad: list = []
    ids = [stable_image_id(r) for r in unique]

    def gen():
        for i, img in iter_images(source, unique, size, center_crop, bad=bad):
            yield img, ids[i]

    base = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((), tf.int64)))
    steps = -(-len(unique) // batch_size)

    def run(flipped: bool) -> np.ndarray:
        def prep(x, image_id):
            x = tf.cast(x, tf.float32)
            if low_light_seed is not None:
                x = low_light(x / 255.0, low_light_seed, image_id) * 255.0
            if flipped:
                x = tf.reverse(x, axis=[2])
            return normalize_pixels(x, normalization)

        ds = base.batch(batch_size).map(prep).prefetch(2)
        out = model.predict(ds, steps=steps, verbose=verbose)
        return np.asarray(out, dtype=np.float64).reshape(len(unique), -1)

    views = [run(False)] + ([run(True)] if mirrored else [])
    ok = np.ones(len(unique), bool)
    for i, _, _ in bad:
        ok[i] = False
    return unique, views, ok
