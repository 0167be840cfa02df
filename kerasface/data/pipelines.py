"""``tf.data`` pipelines over decoded chunks and identity indexes, and FaceNet's offline triplets.

* :func:`pk_batches`: batches of ``P`` identities x ``K`` images (plans of
  :func:`kerasface.data.sampling.pk_plan`) for online mining losses (batch-hard,
  batch semi-hard), either from a decoded :class:`~kerasface.data.loaders.Chunk`
  or streaming from an :class:`~kerasface.data.identities.IdentityIndex`.
* :func:`offline_triplet_dataset`: FaceNet's offline selection within a chunk:
  embed the chunk with the current model (:func:`embed_images`), let a selector
  pick (anchor, positive, negative) triplets (:func:`apply_triplet_selector`
  checks its answer), return a ``tf.data.Dataset`` of
  ``((anchor, positive, negative), dummy_y)`` batches (:func:`triplet_dataset`)
  for a three-input triplet model.

Images are normalised with :func:`kerasface.ops.normalize_faces`.  TensorFlow is
imported only by the functions that build datasets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..ops import normalize_faces
from .identities import IdentityIndex
from .images import ImageDecoder
from .loaders import Chunk
from .sampling import pk_batch_plan, seeded_rng

logger = logging.getLogger("kerasface.data")

__all__ = ["apply_triplet_selector", "embed_images", "offline_triplet_dataset", "pk_batches", "triplet_dataset"]


def _as_images_labels(data) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, Chunk):
        return data.images, data.labels
    images, labels = data
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def pk_batches(data, P: int, K: int, *, seed: int = 0, short: str = "replace", min_images: int = 2,
               dtype: str = "float32", repeat: bool = False, image_size: int = 112, center_crop: float = 1.0,
               num_workers: int | None = None, on_error: str = "skip"):
    """``tf.data.Dataset`` of ``(images, labels)`` batches of ``P`` identities x ``K`` images.

    ``data`` is a decoded :class:`Chunk` or ``(images, labels)`` arrays (rows are
    gathered from memory), or an :class:`IdentityIndex` (each batch's images
    are read and decoded when it is produced: memory is one batch, at
    ``image_size`` / ``center_crop``).  Batches follow :func:`pk_plan` (same
    ``short`` and ``min_images`` semantics); each pass over the dataset is the
    next epoch of the plan, so a fresh dataset repeats the same sequence for
    the same ``seed``.  ``repeat=True`` makes it endless (epoch after epoch;
    give ``model.fit`` a ``steps_per_epoch``): the number of batches can differ
    slightly between epochs, so the dataset's cardinality is unknown.

    ``images``: ``[P*K, s, s, 3]``, float32 ``(x - 127.5) / 128`` with
    ``dtype="float32"`` or the raw uint8 with ``dtype="uint8"``; ``labels``:
    int32 ``[P*K]`` (the index / chunk labels), ``K`` equal labels in a row.

    Streaming from an index, an image that cannot be read or decoded is
    replaced by another image of the same identity in the batch and counted
    (``dataset.kerasface_stats``); a batch where an identity has no readable
    image is dropped.
    """
    import tensorflow as tf

    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
    streaming = isinstance(data, IdentityIndex)
    if streaming:
        decoder = ImageDecoder(data, image_size, center_crop, num_workers, on_error)
        labels_all = data.labels
        s = int(image_size)
    else:
        images, labels_all = _as_images_labels(data)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 [n, s, s, 3], got {images.dtype} {images.shape}")
        s = images.shape[1]
        decoder = None
    labels_all = np.asarray(labels_all)
    epoch_counter = [0]
    dropped = [0]

    def batches_of_epoch(e: int):
        plan = pk_batch_plan(data if streaming else labels_all, P, K, e, seed, short, min_images)
        for b in range(len(plan)):
            rows = plan.rows(b)
            lab = labels_all[rows].astype(np.int32)
            if not streaming:
                yield images[rows], lab
                continue
            x, ok = decoder.decode(rows)
            if not ok.all():
                blocks = ok.reshape(P, K)
                if not blocks.any(axis=1).all():
                    dropped[0] += 1
                    logger.warning("dropped a P x K batch: an identity has no readable image in it")
                    continue
                for p in range(P):
                    good = np.flatnonzero(blocks[p])
                    for j, k in enumerate(np.flatnonzero(~blocks[p]).tolist()):
                        x[p * K + k] = x[p * K + good[j % len(good)]]
            yield x, lab

    def gen():
        while True:
            e = epoch_counter[0]
            epoch_counter[0] += 1
            yield from batches_of_epoch(e)
            if not repeat:
                return

    sig = (tf.TensorSpec((P * K, s, s, 3), tf.uint8), tf.TensorSpec((P * K,), tf.int32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    if dtype == "float32":
        ds = ds.map(lambda x, y: (normalize_faces(x), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(2)
    if decoder is not None:
        ds.kerasface_stats = lambda: dict(decoder.stats.as_dict(), dropped_batches=dropped[0])
    return ds


# --------------------------------------------------------------------------- offline triplets
def embed_images(images: np.ndarray, embed_fn: Callable, batch_size: int = 128, normalize: bool = True) -> np.ndarray:
    """Embeddings of uint8 ``images`` ``[n, s, s, 3]`` as float32 ``[n, d]``.

    ``embed_fn`` takes a batch (float32 :func:`~kerasface.ops.normalize_faces`
    when ``normalize``, else the uint8 batch) and returns its embeddings, for
    example ``lambda x: model(x, training=False)`` or ``model.predict_on_batch``.
    """
    out = []
    for b in range(0, len(images), batch_size):
        x = images[b:b + batch_size]
        if normalize:
            x = normalize_faces(x)
        e = embed_fn(x)
        if not isinstance(e, np.ndarray):
            try:
                e = np.asarray(e)
            except Exception:  # e.g. a tensor of another backend on an accelerator
                import keras

                e = keras.ops.convert_to_numpy(e)
        out.append(np.asarray(e, dtype=np.float32).reshape(len(x), -1))
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


def apply_triplet_selector(embeddings: np.ndarray, labels: np.ndarray, selector: Callable) -> np.ndarray:
    """Call ``selector(embeddings, labels)`` and check its answer: int64 ``[T, 3]`` (anchor, positive, negative).

    ``selector`` is any triplet selector, for example a closure over
    :func:`kerasface.losses.select_triplets` (the semi-hard FaceNet selection)
    with its margin; this function only runs it and validates the rows.

    Raises ``ValueError`` when an index is out of range, an anchor and its
    positive differ in label or are the same image, or a negative shares the
    anchor's label.
    """
    labels = np.asarray(labels)
    t = np.asarray(selector(embeddings, labels))
    if t.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if t.ndim != 2 or t.shape[1] != 3 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"selector must return an integer array of shape (T, 3), got {t.dtype} {t.shape}")
    t = t.astype(np.int64)
    n = len(labels)
    if t.min() < 0 or t.max() >= n:
        raise ValueError(f"selector returned indices outside [0, {n})")
    a, p, q = t[:, 0], t[:, 1], t[:, 2]
    if np.any(labels[a] != labels[p]) or np.any(a == p):
        raise ValueError("selector returned a positive that is not another image of the anchor's identity")
    if np.any(labels[a] == labels[q]):
        raise ValueError("selector returned a negative with the anchor's identity")
    return t


def triplet_dataset(images: np.ndarray, triplets: np.ndarray, batch_size: int = 32, *, shuffle: bool = True,
                    seed: int = 0, dtype: str = "float32", dummy_shape: Sequence[int] = (2, 1),
                    drop_remainder: bool = False):
    """``tf.data.Dataset`` of ``((anchor, positive, negative), dummy_y)`` batches from rows of ``images``.

    ``triplets``: int ``[T, 3]`` rows of ``images`` (uint8 ``[n, s, s, 3]``).
    Each of anchor/positive/negative is ``[B, s, s, 3]``, float32
    ``(x - 127.5) / 128`` (``dtype="float32"``) or uint8.  ``dummy_y`` is float32
    zeros ``[B, *dummy_shape]``: Keras needs a target, the triplet loss reads
    only the model's stacked distances; the default ``(2, 1)`` matches the
    monograph's ``(None, 2, 1)`` output.  Triplet order is reshuffled on every
    pass (deterministic for ``seed``); the dataset's cardinality is the number
    of batches, so ``model.fit(ds)`` knows the epoch length.  Images are gathered per batch from the
    given array: no copy of the chunk is made.
    """
    import tensorflow as tf

    if dtype not in ("float32", "uint8"):
        raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [n, s, s, 3], got {images.dtype} {images.shape}")
    triplets = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
    s = images.shape[1:]
    dummy_shape = tuple(int(d) for d in dummy_shape)
    passes = [0]

    def gen():
        e = passes[0]
        passes[0] += 1
        order = seeded_rng(seed, e, 5).permutation(len(triplets)) if shuffle else np.arange(len(triplets))
        for b in range(0, len(order), batch_size):
            t = triplets[order[b:b + batch_size]]
            if drop_remainder and len(t) < batch_size:
                return
            yield (images[t[:, 0]], images[t[:, 1]], images[t[:, 2]]), np.zeros((len(t),) + dummy_shape, np.float32)

    bdim = batch_size if drop_remainder else None
    img_spec = tf.TensorSpec((bdim,) + tuple(s), tf.uint8)
    sig = ((img_spec, img_spec, img_spec), tf.TensorSpec((bdim,) + dummy_shape, tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    n_batches = len(triplets) // batch_size if drop_remainder else -(-len(triplets) // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))  # Keras then knows the epoch length
    if dtype == "float32":
        ds = ds.map(lambda x, y: ((normalize_faces(x[0]), normalize_faces(x[1]), normalize_faces(x[2])), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


def offline_triplet_dataset(chunk, embed_fn: Callable, selector: Callable, batch_size: int = 32, *,
                            embed_batch_size: int = 128, shuffle: bool = True, seed: int = 0, dtype: str = "float32",
                            dummy_shape: Sequence[int] = (2, 1), drop_remainder: bool = False,
                            return_triplets: bool = False):
    """FaceNet's offline triplet selection within one chunk, as a ready ``tf.data.Dataset``.

    1. embed every image of ``chunk`` (a :class:`Chunk` or ``(images, labels)``)
       with ``embed_fn`` (see :func:`embed_images`; images are normalised
       ``(x - 127.5) / 128`` first);
    2. ``selector(embeddings, labels)`` returns int ``[T, 3]``
       (anchor, positive, negative) row indices -- e.g. semi-hard negatives
       with ``d(a, p) < d(a, n) < d(a, p) + margin`` -- checked by
       :func:`apply_triplet_selector`;
    3. return :func:`triplet_dataset` over those triplets: batches of
       ``((anchor, positive, negative), dummy_y)``.

    With ``return_triplets=True`` returns ``(dataset, triplets)``.  Call it again
    for each chunk (the model changes between chunks, so do the triplets).
    """
    images, labels = _as_images_labels(chunk)
    emb = embed_images(images, embed_fn, batch_size=embed_batch_size, normalize=True)
    triplets = apply_triplet_selector(emb, labels, selector)
    if len(triplets) == 0:
        logger.warning("the selector found no triplets in a chunk of %d images", len(images))
    ds = triplet_dataset(images, triplets, batch_size, shuffle=shuffle, seed=seed, dtype=dtype,
                         dummy_shape=dummy_shape, drop_remainder=drop_remainder)
    return (ds, triplets) if return_triplets else ds
