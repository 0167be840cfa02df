"""The classification trainer's data: faces of index rows (in memory or on demand) and the per-epoch batches."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from kerasface.config import ClassifyExperiment
from kerasface.data.augment import make_augment, sub_seed
from kerasface.data.images import ImageDecoder, TextProgress
from kerasface.data.sampling import capped_epoch_rows, expanded_epoch, pk_plan
from kerasface.ops import normalize_faces

logger = logging.getLogger("kerasface.training")

__all__ = ["FLIP_SEED", "ImageStore", "batch_plan", "flip_faces", "train_dataset", "training_augment"]


class ImageStore:
    """uint8 faces of given index rows: decoded once into memory when they fit, else on demand.

    ``get(rows)`` returns ``[n, s, s, 3]``. In memory, rows that could not be
    read or decoded are listed in ``bad_rows`` (the caller drops them); on
    demand they come back black and are counted in ``stats``.
    """

    def __init__(self, index, rows: np.ndarray, image_size: int, center_crop: float, cache_mb: float,
                 on_error: str = "skip", progress: bool = True):
        self.decoder = ImageDecoder(index, image_size, center_crop, None, "raise" if on_error == "error" else "skip")
        self.size = int(image_size)
        rows = np.unique(np.asarray(rows, np.int64))
        need_mb = len(rows) * self.size * self.size * 3 / 2**20
        self.in_memory = need_mb <= cache_mb
        self.bad_rows = np.zeros(0, np.int64)
        self._rows = rows  # sorted: a row's position in memory is np.searchsorted(self._rows, row)
        if self.in_memory:
            self._decode_all(rows, progress)
        logger.info("%d faces at %dx%d (%.0f MB): %s", len(rows), self.size, self.size, need_mb,
                    "decoded into memory" if self.in_memory else f"read on demand (over cache_mb={cache_mb:g})")

    def _decode_all(self, rows: np.ndarray, progress: bool) -> None:
        self._images = np.empty((len(rows), self.size, self.size, 3), np.uint8)
        ok = np.ones(len(rows), bool)
        bar = TextProgress(len(rows), "decoding faces", enabled=progress)
        step = 512
        for b in range(0, len(rows), step):
            imgs, good = self.decoder.decode(rows[b:b + step])
            self._images[b:b + step] = imgs
            ok[b:b + step] = good
            bar.update(min(b + step, len(rows)))
        self.bad_rows = rows[~ok]

    def get(self, rows) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if self.in_memory:
            return self._images[np.searchsorted(self._rows, rows)]
        return self.decoder.decode(rows)[0]

    @property
    def stats(self) -> dict:
        return self.decoder.stats.as_dict()

    def close(self) -> None:
        self.decoder.close()


def batch_plan(cfg: ClassifyExperiment, labels: np.ndarray, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``(positions, variants)`` of one epoch: ``[batches, batch]`` positions into the training rows and, with
    ``cfg.augment_fixed_set``, the report-003 variant of each (0 the original, ``k`` the ``k``-th transform;
    every capped row with each variant once, so the epoch is 6x as long), else None."""
    if cfg.identity_batches:
        return pk_plan(labels, cfg.identities_per_batch, cfg.m_images, epoch=epoch, seed=cfg.seed,
                       short="replace", min_images=cfg.min_images), None
    pos = capped_epoch_rows(labels, cfg.max_per_identity, seed=cfg.seed, epoch=epoch)
    variants = None
    if cfg.augment_fixed_set:
        pos, variants = expanded_epoch(pos, make_augment(cfg.augment).copies, seed=cfg.seed, epoch=epoch)
    n = len(pos) // cfg.batch_size
    shape = (n, cfg.batch_size)
    if variants is not None:
        variants = variants[:n * cfg.batch_size].reshape(shape)
    return pos[:n * cfg.batch_size].reshape(shape), variants


#: The sub-seed (:func:`~kerasface.data.augment.sub_seed` of a batch's seed) of the ``flip`` draws.
FLIP_SEED = 7919


def flip_faces(x, seed, targets=None):
    """Mirror each face of a batch left-right with probability 0.5 (seeded); ``targets`` ``[n, 2, D]``
    (the teacher's embeddings of each face and of its mirror) -> the ``[n, D]`` target of each returned face."""
    n = tf.shape(x)[0]
    flip = tf.random.stateless_uniform([n], seed=sub_seed(seed, FLIP_SEED)) < 0.5
    x = tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x)
    if targets is None:
        return x, None
    return x, tf.where(flip[:, None], targets[:, 1], targets[:, 0])


def training_augment(cfg: ClassifyExperiment, with_teacher_targets: bool):
    """The augmentation policy of a run. With per-image teacher targets (embedding distillation) a policy
    never mirrors faces itself: ``--flip`` mirrors them together with their targets, and a face the policy
    mirrored would be paired with the unmirrored face's target (``basic`` / ``basic-seaweed`` then run
    without their flip)."""
    if with_teacher_targets and cfg.augment in ("basic", "basic-seaweed"):
        return make_augment(cfg.augment, flip=False)
    return make_augment(cfg.augment)


def train_dataset(cfg: ClassifyExperiment, store: ImageStore, rows: np.ndarray, labels: np.ndarray,
                  start_epoch: int, teacher: np.ndarray | None = None) -> tf.data.Dataset:
    """Endless batches from epoch ``start_epoch`` on: margin ``((x, y), y)``, angproto ``(x, arange(N))``,
    the summed objective ``({"image": x, "label": y}, y)``; with ``teacher`` (``[len(rows), views, D]``, the
    cached teacher embeddings of ``rows``: of each image and, with ``cfg.flip``, of its mirror) the summed
    objective's dict also holds ``"teacher_embedding"`` ``[n, D]``, the target of each (mirrored or not) face.
    ``cfg.flip`` mirrors each face with probability 0.5 before the ``cfg.augment`` policy; with
    ``cfg.augment_fixed_set`` each face gets the report-003 variant its epoch plan assigns. The random draws
    of batch b of epoch e depend on (seed, e, b) only: a resumed run augments as one that never stopped."""
    s = store.size
    if teacher is not None and bool(cfg.flip) and teacher.shape[1] < 2:
        raise ValueError("flip needs the teacher's embeddings of the mirrored faces (views = 2)")

    fixed = bool(cfg.augment_fixed_set)

    def gen():
        e = start_epoch
        while True:
            plan, variants = batch_plan(cfg, labels, e)
            if not len(plan):
                raise RuntimeError(f"epoch {e} has no full batch")
            for i, b in enumerate(plan):
                where = np.array([e, i], np.int64)
                k = variants[i].astype(np.int32) if fixed else np.full(len(b), -1, np.int32)
                if teacher is None:
                    yield store.get(rows[b]), labels[b].astype(np.int32), where, k
                else:
                    yield store.get(rows[b]), labels[b].astype(np.int32), where, k, teacher[b]
            e += 1

    n = cfg.identities_per_batch * cfg.m_images if cfg.identity_batches else cfg.batch_size
    sig = (tf.TensorSpec((n, s, s, 3), tf.uint8), tf.TensorSpec((n,), tf.int32), tf.TensorSpec((2,), tf.int64),
           tf.TensorSpec((n,), tf.int32))
    if teacher is not None:
        sig += (tf.TensorSpec((n,) + tuple(teacher.shape[1:]), tf.float32),)
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    augment = training_augment(cfg, teacher is not None)
    base = tf.constant([cfg.seed, 1000], tf.int64)

    def batch_seed(epoch_batch):
        key = tf.random.experimental.stateless_fold_in(base, epoch_batch[0])
        key = tf.random.experimental.stateless_fold_in(key, epoch_batch[1])
        return tf.random.stateless_uniform([], seed=key, minval=None, maxval=None, dtype=tf.int64)

    def augmented(x, r, k):
        """The policy's draw, or with the fixed set the planned variant ``k`` of each face."""
        return augment.apply_choices(x, k, r) if fixed else augment(x, r)

    def policy(x, r, k):
        return augmented(flip_faces(x, r)[0] if bool(cfg.flip) else x, r, k)

    if teacher is not None:
        def fmt(x, y, eb, k, t):
            r = batch_seed(eb)
            x, target = flip_faces(x, r, t) if bool(cfg.flip) else (x, t[:, 0])
            return {"image": normalize_faces(augmented(x, r, k)), "label": y, "teacher_embedding": target}, y
    elif cfg.objective == "angproto":
        target = tf.range(cfg.identities_per_batch, dtype=tf.int32)

        def fmt(x, _, eb, k):
            return normalize_faces(policy(x, batch_seed(eb), k)), target
    elif cfg.objective == "distillation":
        def fmt(x, y, eb, k):
            return {"image": normalize_faces(policy(x, batch_seed(eb), k)), "label": y}, y
    else:
        def fmt(x, y, eb, k):
            return (normalize_faces(policy(x, batch_seed(eb), k)), y), y

    ds = ds.map(fmt, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)
