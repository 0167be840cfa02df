"""Class-balanced epoch plans for classification training (report 001: at most 200 images per identity per epoch).

:func:`capped_epoch_rows` picks, for one epoch, at most ``K`` images of every
identity and returns their rows in a shuffled order.  An identity with more
than ``K`` images is read through a fixed permutation of its images (seeded by
``(seed, identity)``) in windows of ``K``: epoch ``e`` takes positions
``e K, ..., e K + K - 1`` (mod its count), so over ``ceil(count / K)`` epochs
every image is seen and no image is seen twice before all have been.  Smaller
identities contribute all their images every epoch.  The epoch order is a
permutation seeded by ``(seed, epoch)``.  NumPy only; P x K batches for the
prototypical / triplet losses are :func:`kerasface.data.pk_batches`.
"""

from __future__ import annotations

from typing import Union

import numpy as np

__all__ = ["capped_epoch_rows"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def capped_epoch_rows(labels, max_per_identity: int = 200, seed: int = 0, epoch: int = 0, shuffle: bool = True) -> np.ndarray:
    """int64 rows of one epoch: at most ``max_per_identity`` per identity (see the module docstring).

    ``labels``: int labels ``[N]`` (any order) or an object with a ``labels``
    array (:class:`~kerasface.data.IdentityIndex`, a chunk).  ``shuffle=False``
    returns the rows grouped by identity, in label order.
    """
    labels = np.asarray(getattr(labels, "labels", labels))
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    K = int(max_per_identity)
    if K < 1:
        raise ValueError(f"max_per_identity must be >= 1, got {max_per_identity}")
    order = np.argsort(labels, kind="stable").astype(np.int64)
    ids, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    parts = []
    for k, st, c in zip(ids.tolist(), starts.tolist(), counts.tolist()):
        rows = order[st:st + c]
        if c > K:
            perm = _rng(seed, 1, k).permutation(c)  # fixed for the run
            rows = rows[perm[(int(epoch) * K + np.arange(K)) % c]]
        parts.append(rows)
    out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if shuffle:
        out = out[_rng(seed, 2, int(epoch)).permutation(len(out))]
    return out
