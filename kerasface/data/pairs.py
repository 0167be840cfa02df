"""tf.data pipeline over LFW-style verification pairs.

:class:`PairData` decodes every distinct image of a pairs list once into a
uint8 cache and keeps, per pair, two indices into it.  :meth:`PairData.dataset`
gathers from that cache inside ``map`` (images are never duplicated per pair)
and yields ``((img1, img2), label)``:

* ``img1``, ``img2``: float32 ``[B, s, s, 3]`` RGB, normalised by
  :func:`kerasface.ops.normalize_faces` (``(x - 127.5) / 128`` from uint8 ``x``,
  i.e. values in [-0.996, 0.996], within [-1, 1));
* ``label``: int32 ``[B]``, 1 for the same person, 0 otherwise.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ..ops import normalize_faces
from .images import load_images
from .lfw import Pair, resolve_pairs
from .lowlight import low_light as _low_light
from .sources import open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = ["PairData", "normalize_images"]

_N_NAMES = 5  # names listed in reports and log lines


#: The same function as :func:`kerasface.ops.normalize_faces` (its older name here).
normalize_images = normalize_faces


def stable_image_id(relpath: str) -> int:
    """A non-negative 31-bit id derived from the relpath (crc32), identical in every pair list."""
    return zlib.crc32(relpath.encode("utf-8")) & 0x7FFFFFFF


class PairData:
    """Verification pairs backed by an in-memory uint8 image cache.

    Attributes: ``images`` uint8 ``[N, s, s, 3]``; ``relpaths`` (the N cached
    images); ``image_ids`` int64 ``[N]`` stable per-image ids (crc32 of the
    relpath, the low-light key); ``index`` int32 ``[P, 2]`` rows of ``images``
    for each pair; ``labels`` int32 ``[P]`` (1 = same person); ``pairs`` the kept
    :class:`~kerasface.data.lfw.Pair` list; ``report`` a dict of counts
    (``requested``, ``kept``, ``missing`` pairs, ``missing_images``, ``corrupt``
    pairs, ``corrupt_images``) with the first few names of missing/corrupt images.
    """

    def __init__(self, images: np.ndarray, relpaths: Sequence[str], index: np.ndarray, labels: np.ndarray,
                 pairs: Sequence[Pair], report: dict):
        self.images = images
        self.relpaths = list(relpaths)
        self.image_ids = np.array([stable_image_id(r) for r in self.relpaths], dtype=np.int64)
        self.index = np.asarray(index, dtype=np.int32).reshape(-1, 2)
        self.labels = np.asarray(labels, dtype=np.int32)
        self.pairs = list(pairs)
        self.report = report

    @classmethod
    def from_pairs(cls, pairs: Sequence[Pair], source, size: int = 112, center_crop: float = 1.0,
                   on_missing: str = "skip", on_error: str = "skip", progress: bool = True) -> PairData:
        """Resolve ``pairs`` against ``source`` (an ImageSource or path), decode each distinct image once.

        Pairs with a missing image are handled by ``on_missing`` (see
        :func:`resolve_pairs`); pairs touching a corrupt image by ``on_error``
        (``"skip"``: dropped and logged with a count, ``"raise"``:
        :class:`CorruptImageError`).
        """
        source = open_image_source(source)
        pairs = list(pairs)
        kept, missing = resolve_pairs(pairs, source, on_missing=on_missing)
        n_resolved = len(kept)
        unique = list(dict.fromkeys(r for p in kept for r in (p.path1, p.path2)))
        images, ok = load_images(source, unique, size=size, center_crop=center_crop, on_error=on_error,
                                 progress=progress)
        corrupt = [r for r, g in zip(unique, ok) if not g]
        if corrupt:
            bad = set(corrupt)
            before = len(kept)
            kept = [p for p in kept if p.path1 not in bad and p.path2 not in bad]
            logger.warning("dropped %d of %d pairs touching %d corrupt image(s); first: %s", before - len(kept), before,
                           len(corrupt), ", ".join(corrupt[:_N_NAMES]))
        # Cache only the images that kept pairs use.
        used = list(dict.fromkeys(r for p in kept for r in (p.path1, p.path2)))
        row_of_unique = {r: i for i, r in enumerate(unique)}
        images = images[[row_of_unique[r] for r in used]] if len(used) != len(unique) else images
        row = {r: i for i, r in enumerate(used)}
        index = np.array([[row[p.path1], row[p.path2]] for p in kept], dtype=np.int32).reshape(-1, 2)
        labels = np.array([int(p.same) for p in kept], dtype=np.int32)
        missing_names = list(dict.fromkeys(r for _, r in missing))
        report = {
            "requested": len(pairs),
            "kept": len(kept),
            "missing": len(pairs) - n_resolved,
            "missing_images": len(missing_names),
            "missing_names": missing_names[:_N_NAMES],
            "corrupt": n_resolved - len(kept),
            "corrupt_images": len(corrupt),
            "corrupt_names": corrupt[:_N_NAMES],
            "images": len(used),
            "same": int(labels.sum()),
            "different": int(len(labels) - labels.sum()),
            "source": repr(source),
        }
        if not kept:
            logger.warning("no pairs left out of %d requested (source %r)", len(pairs), source)
        return cls(images, used, index, labels, kept, report)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        r = self.report
        return (f"PairData(pairs={len(self)}, images={len(self.images)}, size={self.images.shape[1:3]}, "
                f"same={r.get('same')}, missing={r.get('missing')}, corrupt={r.get('corrupt')})")

    def dataset(self, batch_size: int = 32, shuffle: bool = True, seed: int = 0, augment: bool = False,
                low_light: bool = False, low_light_seed: int = 1234, drop_remainder: bool = False,
                repeat: bool = False, first_epoch: int = 0) -> tf.data.Dataset:
        """``tf.data.Dataset`` of ``((img1, img2), label)`` batches (see the module docstring).

        Epochs are numbered, and everything random in epoch ``e`` depends on
        ``(seed, e)`` only: ``shuffle`` orders the pairs by a permutation of
        ``(seed, e)``, ``augment`` flips each image independently from
        ``(seed, e, batch)``.  The dataset is epoch ``first_epoch`` (iterating it
        again gives the same batches), or with ``repeat`` epochs ``first_epoch``,
        ``first_epoch + 1``, ... without end (``ceil(len / batch_size)``
        batches each, ``floor`` with ``drop_remainder``): a training run resumed
        at epoch ``k`` passes ``first_epoch=k`` and sees the same data as one that
        never stopped.
        ``low_light``: apply :func:`~kerasface.data.lowlight.low_light` keyed by
        ``(low_light_seed, image id)`` before the flip and the normalisation, so
        each image has one fixed dark version.
        """
        n_pairs = len(self.labels)
        cache = tf.constant(self.images)  # uint8 [N, s, s, 3], gathered inside map
        ids = tf.constant(self.image_ids)
        index, labels = tf.constant(self.index), tf.constant(self.labels)
        base = tf.constant([int(seed), 0], tf.int64)

        def one_epoch(e):
            if shuffle and n_pairs > 1:
                order = tf.random.experimental.stateless_shuffle(
                    tf.range(n_pairs, dtype=tf.int64), seed=tf.random.experimental.stateless_fold_in(base, e))
            else:
                order = tf.range(n_pairs, dtype=tf.int64)
            rows = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
            return rows.enumerate().map(lambda b, r: (r, e, b))

        last = 2**62 if repeat else int(first_epoch) + 1
        ds = tf.data.Dataset.range(int(first_epoch), last).flat_map(one_epoch)
        per_epoch = n_pairs // batch_size if drop_remainder else -(-n_pairs // batch_size)
        # flat_map hides the length; Keras needs it to end a validation pass without a warning
        ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY if repeat else per_epoch))

        def load(rows, e, b):
            idx, lab = tf.gather(index, rows), tf.gather(labels, rows)
            key = tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(base, e), b)
            out = []
            for k in range(2):
                which = idx[:, k]
                x = tf.cast(tf.gather(cache, which), tf.float32) / 255.0
                if low_light:
                    x = _low_light(x, low_light_seed, tf.gather(ids, which))
                if augment:
                    flip = tf.random.stateless_uniform(
                        tf.shape(which), seed=tf.random.experimental.stateless_fold_in(key, k + 1)) < 0.5
                    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
                out.append(normalize_faces(x * 255.0))
            return (out[0], out[1]), lab

        ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        opts = tf.data.Options()
        opts.deterministic = True
        return ds.with_options(opts).prefetch(tf.data.AUTOTUNE)
