"""Embeddings of a list of images for any saved embedding model, streamed through tf.data.

Images are read from an opened :class:`~kerasface.data.lfw.ImageSource` (folder or
zip), decoded on a small thread pool, centre-cropped and resized with OpenCV,
prepared by :func:`prepare_batch` (low light, mirror, normalisation), batched and
run through ``model.predict``: memory holds one prefetch window of images, never
the whole list. How is decided by one :class:`~kerasface.evaluation.settings.EvalSettings`.

Flip test-time augmentation: the embedding of the image and of its horizontal
mirror are summed, then L2-normalised (the InsightFace / ArcFace evaluation
rule). Without flip the embeddings are L2-normalised too unless
``l2_normalize=False``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from kerasface.data.images import CorruptImageError, read_face
from kerasface.data.lowlight import low_light
from kerasface.data.pairs import stable_image_id
from kerasface.data.sources import ImageSource, open_image_source
from kerasface.evaluation.kinds import embedding_submodel, model_image_size, model_kind
from kerasface.evaluation.settings import NORMALIZATIONS, EvalSettings
from kerasface.ops import l2_normalize, normalize_faces

__all__ = [
    "NORMALIZATIONS",
    "normalize_pixels",
    "prepare_batch",
    "embedding_submodel",
    "model_kind",
    "model_image_size",
    "Embeddings",
    "extract_embeddings",
    "embed_views",
    "iter_images",
]

logger = logging.getLogger("kerasface.evaluation")


def normalize_pixels(x, normalization: str = "kerasface"):
    """uint8 (or 0..255 float) images -> float32 in the range the model was trained on
    (``kerasface`` is :func:`kerasface.ops.normalize_faces`)."""
    if normalization == "kerasface":
        return normalize_faces(x)
    x = tf.cast(x, tf.float32)
    if normalization == "unit":
        return x / 255.0
    if normalization == "raw":
        return x
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def prepare_batch(images, image_ids, settings: EvalSettings, flipped: bool = False):
    """A uint8 batch ``(n, h, w, 3)`` -> the model's float32 input: darkened (``settings.low_light_seed``,
    keyed by the images' stable ids), mirrored when ``flipped``, normalised (``settings.normalization``)."""
    x = tf.cast(images, tf.float32)
    if settings.low_light_seed is not None:
        x = low_light(x / 255.0, settings.low_light_seed, image_ids) * 255.0
    if flipped:
        x = tf.reverse(x, axis=[2])
    return normalize_pixels(x, settings.normalization)


def _load_one(source, rel: str, size: int, center_crop: float):
    try:
        return read_face(source, rel, size, center_crop), None
    except CorruptImageError as e:
        return None, str(e)


def iter_images(source, relpaths: Sequence[str], size: int, center_crop: float = 1.0, workers: int = 4,
                window: int = 256, bad: list | None = None):
    """Yield ``(index, uint8 image)`` for ``relpaths`` in order, decoded ``window`` at a time on ``workers`` threads.

    Corrupt images are logged, appended to ``bad`` as ``(index, relpath, reason)``
    and yield a black image so that positions stay aligned.
    """
    source = open_image_source(source)  # returned unchanged when already open
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


def extract_embeddings(model: keras.Model, source, relpaths: Sequence[str], *, settings: EvalSettings | None = None,
                       **setting_kwargs) -> Embeddings:
    """Embed every image of ``relpaths`` (duplicates embedded once) with ``model``.

    ``model``: a single-input embedding model, or a verifier / triplet graph whose
    shared backbone is used (:func:`~kerasface.evaluation.kinds.embedding_submodel`).
    ``settings`` (:class:`~kerasface.evaluation.settings.EvalSettings`), or its fields as
    keywords (``image_size`` defaults to the model's input size, ``flip``,
    ``l2_normalize``, ``low_light_seed``, ``batch_size``, ``verbose``, ...).
    """
    settings = EvalSettings.of(settings, **setting_kwargs)
    unique, views, ok = embed_views(embedding_submodel(model), open_image_source(source), relpaths, settings)
    vec = views[0] + views[1] if settings.flip else views[0]
    normalized = bool(settings.l2_normalize or settings.flip)
    if normalized:
        vec = l2_normalize(vec, epsilon=1e-24)  # = vec / max(||vec||, 1e-12)
    return Embeddings(vec, unique, ok, settings.flip, normalized)


def embed_views(model: keras.Model, source: ImageSource, relpaths: Sequence[str],
                settings: EvalSettings) -> tuple[list, list, np.ndarray]:
    """Raw outputs of the embedding ``model`` for the distinct images of ``relpaths``: ``(relpaths, views, ok)``.

    ``views[0]`` embeds the images as they are; with ``settings.flip`` ``views[1]``
    embeds their horizontal mirrors. Nothing is normalised. ``ok[i]`` is False
    for an undecodable image (its rows are the embedding of a black image).
    """
    size = model_image_size(model, settings.image_size)
    if settings.image_size is not None and settings.image_size != size:
        raise ValueError(f"the model takes {size}x{size} inputs, image_size={settings.image_size} was asked")
    unique = list(dict.fromkeys(relpaths))
    if not unique:
        raise ValueError("no images to embed")
    bad: list = []
    ids = [stable_image_id(r) for r in unique]

    def gen():
        for i, img in iter_images(source, unique, size, settings.center_crop, bad=bad):
            yield img, ids[i]

    base = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec((size, size, 3), tf.uint8), tf.TensorSpec((), tf.int64)))
    steps = -(-len(unique) // settings.batch_size)

    def run(flipped: bool) -> np.ndarray:
        ds = base.batch(settings.batch_size).map(lambda x, i: prepare_batch(x, i, settings, flipped)).prefetch(2)
        out = model.predict(ds, steps=steps, verbose=settings.verbose)
        return np.asarray(out, dtype=np.float64).reshape(len(unique), -1)

    views = [run(False)] + ([run(True)] if settings.flip else [])
    ok = np.ones(len(unique), bool)
    for i, _, _ in bad:
        ok[i] = False
    return unique, views, ok
