"""Which images make an epoch, a chunk or a batch: seeded, deterministic plans over identity labels (NumPy only).

* :func:`capped_epoch_rows`: one epoch of at most ``K`` images of every identity
  (report 001: at most 200 images per identity per epoch).  An identity with more
  than ``K`` images is read through a fixed permutation of its images (seeded by
  ``(seed, identity)``) in windows of ``K``: epoch ``e`` takes positions
  ``e K, ..., e K + K - 1`` (mod its count), so over ``ceil(count / K)`` epochs
  every image is seen and no image is seen twice before all have been.  Smaller
  identities contribute all their images every epoch.  The epoch order is a
  permutation seeded by ``(seed, epoch)``.
* :func:`expanded_epoch`: an epoch's rows, each with every variant of a fixed
  augmented set once (report 003's 6x set), shuffled by ``(seed, epoch)``.
* :func:`pk_plan` / :func:`pk_batch_plan`: one epoch of batches of exactly ``P``
  identities x ``K`` images (prototypical, batch-hard / semi-hard triplet losses);
  the ``tf.data`` pipeline over them is :func:`kerasface.data.pipelines.pk_batches`.
* :class:`GroupPlan` / :class:`BalancedPlan`: one epoch's chunks of identity groups
  (the two modes of :class:`kerasface.data.loaders.ChunkedLoader`).

A plan keeps only O(groups) numbers (about one per ``K`` images), never an array
over every image of the list: a chunk's (batch's) rows are computed when asked for.
Every plan of epoch ``e`` depends only on ``(seed, e)`` and the labels.
"""

from __future__ import annotations

from array import array
from collections import deque

import numpy as np

from .identities import IdentityIndex

__all__ = ["BalancedPlan", "GroupPlan", "balanced_chunk_plan", "capped_epoch_rows", "cover_chunk_plan",
           "expanded_epoch", "pk_batch_plan", "pk_plan", "seeded_rng"]

_LOOKAHEAD = 64  # deferred units scanned when a chunk or batch is refilled


def seeded_rng(*key: int) -> np.random.Generator:
    """A NumPy generator seeded by the integers ``key`` (each taken mod 2**32): the same key, the same stream."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def capped_epoch_rows(labels, max_per_identity: int = 200, seed: int = 0, epoch: int = 0,
                      shuffle: bool = True) -> np.ndarray:
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
            perm = seeded_rng(seed, 1, k).permutation(c)  # fixed for the run
            rows = rows[perm[(int(epoch) * K + np.arange(K)) % c]]
        parts.append(rows)
    out = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if shuffle:
        out = out[seeded_rng(seed, 2, int(epoch)).permutation(len(out))]
    return out


def expanded_epoch(positions, copies: int, seed: int = 0, epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed ``copies``-fold set (report 003's 6x set): every entry of ``positions`` once with each variant
    ``0 .. copies - 1``, in an order permuted by ``(seed, epoch)``; returns int64 ``(positions, variants)``,
    each ``copies x len(positions)`` long."""
    positions = np.asarray(positions, np.int64)
    copies = int(copies)
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    order = seeded_rng(seed, 3, int(epoch)).permutation(copies * len(positions))
    return positions[order // copies], (order % copies).astype(np.int64)


# --------------------------------------------------------------------------- planning
# An epoch is planned at the level of *units*, one unit = one group of images of
# one identity (unit j of identity k).  The plan keeps, per chunk or batch, only
# the (identity, j) of its units: O(units) memory, about one entry per M (or K)
# images, never an array over every image of the list.  A unit's rows are
# computed when its chunk is loaded, from a permutation of the identity's
# images seeded by (seed, epoch, identity).


def _groups_of(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by label: ``(rows, starts)``; group g owns ``rows[starts[g]:starts[g+1]]``."""
    labels = np.asarray(labels)
    rows = np.argsort(labels, kind="stable").astype(np.int64)
    _, counts = np.unique(labels[rows], return_counts=True)
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return rows, starts


def _pack(unit_ident: np.ndarray, unit_size: np.ndarray, order: np.ndarray, capacity: int, max_units: int,
          full_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Greedily pack units (taken in ``order``) into bins of at most ``capacity`` images and ``max_units`` units.

    A bin never holds two units of the same identity.  A unit that does not fit
    the open bin is deferred and tried first for the next bin; a bin closes
    when it is full or when more than ``_LOOKAHEAD`` units wait.  Returns
    ``(units, bounds)``: bin ``b`` is ``units[bounds[b]:bounds[b + 1]]``.  With
    ``full_only`` bins with fewer than ``max_units`` units are dropped.
    """
    ident = array("q", np.asarray(unit_ident, dtype=np.int64).tobytes())
    size = array("q", np.asarray(unit_size, dtype=np.int64).tobytes())
    flat = array("q")
    bounds = array("q", [0])
    cur: list[int] = []
    cur_ids: set = set()
    cur_n = 0
    deferred: deque = deque()

    def fits(u) -> bool:
        return ident[u] not in cur_ids and cur_n + size[u] <= capacity and len(cur) < max_units

    def add(u) -> None:
        nonlocal cur_n
        cur.append(u)
        cur_ids.add(ident[u])
        cur_n += size[u]

    def close_and_refill() -> None:
        nonlocal cur, cur_ids, cur_n
        if cur and (not full_only or len(cur) == max_units):
            flat.extend(cur)
            bounds.append(len(flat))
        cur, cur_ids, cur_n = [], set(), 0
        kept = []
        for _ in range(min(_LOOKAHEAD, len(deferred))):
            u = deferred.popleft()
            if fits(u):
                add(u)
            else:
                kept.append(u)
        deferred.extendleft(reversed(kept))

    for u in np.asarray(order, dtype=np.int64):
        u = int(u)
        if fits(u):
            add(u)
            if cur_n == capacity or len(cur) == max_units:
                close_and_refill()
        else:
            deferred.append(u)
            if len(deferred) > _LOOKAHEAD:
                close_and_refill()
    while cur or deferred:
        close_and_refill()
    return np.frombuffer(flat, dtype=np.int64), np.frombuffer(bounds, dtype=np.int64)


class GroupPlan:
    """One epoch's chunks (or batches) of identity groups; rows are computed per chunk.

    Identity ``k`` owns rows ``starts[k]:starts[k] + counts[k]`` (mapped through
    ``row_map`` when given) and gives ``g[k]`` groups when ``eligible[k]``.
    Groups are spread over the epoch (stratified random order keyed by
    ``(seed, epoch, tag)``) and packed into chunks of at most ``capacity``
    images and ``max_units`` groups, never two groups of one identity in a
    chunk; ``full_only`` drops chunks with fewer than ``max_units`` groups.
    ``len(plan)`` chunks; :meth:`rows` gives one.

    ``split="even"``: identity k's shuffled images are dealt round-robin into
    ``g[k]`` groups of near-equal size (every image in exactly one group).
    ``split="fixed"``: groups of exactly ``size`` images: with ``count >= size``
    group j is shuffled positions ``j*size .. j*size+size-1`` wrapping around
    (no image twice in a group); with ``count < size`` all images plus
    ``size - count`` drawn with replacement.
    """

    def __init__(self, starts, counts, g, eligible, seed, epoch, tag, split, size, capacity, max_units,
                 full_only=False, row_map=None):
        self.starts, self.counts, self.g = starts, counts, g
        self.seed, self.epoch, self.tag, self.split, self.size = seed, epoch, tag, split, size
        self.row_map = row_map
        ids = np.flatnonzero(eligible & (g > 0))
        gi = g[ids]
        ident = np.repeat(ids, gi)
        j = np.arange(len(ident), dtype=np.int64) - np.repeat(np.cumsum(gi) - gi, gi)
        if split == "even":
            c = counts[ident]
            unit_size = (c - j + g[ident] - 1) // g[ident]
        else:
            unit_size = np.full(len(ident), size, dtype=np.int64)
        # stratified random order: identity k's g units get keys (j + u) / g, spread over the epoch
        key = (j + seeded_rng(seed, epoch, tag).random(len(ident))) / np.maximum(g[ident], 1)
        order = np.argsort(key, kind="stable")
        units, self.bounds = _pack(ident, unit_size, order, capacity, max_units, full_only)
        self.ident = ident[units]
        self.j = j[units]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def unit_rows(self, k: int, j: int) -> np.ndarray:
        """Rows of group ``j`` of identity ``k``."""
        c = int(self.counts[k])
        rng = seeded_rng(self.seed, self.epoch, self.tag, k)
        perm = rng.permutation(c)
        if self.split == "even":
            pos = perm[j::int(self.g[k])]
        elif c >= self.size:
            pos = perm[(j * self.size + np.arange(self.size)) % c]
        else:
            pos = np.concatenate([perm, perm[rng.integers(0, c, self.size - c)]])
        rows = int(self.starts[k]) + pos.astype(np.int64)
        return rows if self.row_map is None else self.row_map[rows]

    def rows(self, b: int) -> np.ndarray:
        """Rows of chunk (batch) ``b``, identity by identity."""
        lo, hi = int(self.bounds[b]), int(self.bounds[b + 1])
        return np.concatenate([self.unit_rows(int(k), int(j)) for k, j in zip(self.ident[lo:hi], self.j[lo:hi])])


class BalancedPlan:
    """``N`` shuffled identities per chunk, ``min(M, count)`` images each from a fixed per-identity shuffle."""

    def __init__(self, starts, counts, seed, epoch, N, M):
        self.starts, self.counts, self.seed, self.epoch, self.N, self.M = starts, counts, seed, epoch, N, M
        ids = np.flatnonzero(counts > 0)
        self.ids = ids[seeded_rng(seed, epoch, 3).permutation(len(ids))]

    def __len__(self) -> int:
        return -(-len(self.ids) // self.N)

    def rows(self, b: int) -> np.ndarray:
        """Rows of chunk ``b``, identity by identity."""
        parts = []
        for k in self.ids[b * self.N:(b + 1) * self.N].tolist():
            c = int(self.counts[k])
            perm = seeded_rng(self.seed, 0, 2, k).permutation(c)  # the same every epoch
            pos = perm if c <= self.M else perm[(self.epoch * self.M + np.arange(self.M)) % c]
            parts.append(int(self.starts[k]) + pos.astype(np.int64))
        return np.concatenate(parts)


def cover_chunk_plan(index: IdentityIndex, epoch: int, seed: int, images_per_identity: int, chunk_size: int,
                     max_identities: int | None = None) -> GroupPlan:
    """Chunks of an epoch that holds every image of ``index`` once (``ChunkedLoader(mode="cover")``).

    Each identity's images are shuffled and split into ``ceil(count / M)`` groups
    of near-equal size (at most ``M = images_per_identity``), spread over the
    epoch and packed into chunks of at most ``chunk_size`` images (and
    ``max_identities`` identities).
    """
    counts = index.counts
    M = int(images_per_identity)
    return GroupPlan(index.starts, counts, -(-counts // M), counts > 0, seed, epoch, 1, "even", M, chunk_size,
                     max_identities or chunk_size)


def balanced_chunk_plan(index: IdentityIndex, epoch: int, seed: int, identities_per_chunk: int,
                        images_per_identity: int) -> BalancedPlan:
    """Chunks of ``N`` identities x ``min(M, count)`` images, every identity once an epoch
    (``ChunkedLoader(mode="balanced")``)."""
    return BalancedPlan(index.starts, index.counts, seed, epoch, identities_per_chunk, images_per_identity)


def pk_batch_plan(labels, P: int, K: int, epoch: int = 0, seed: int = 0, short: str = "replace",
                  min_images: int = 2) -> GroupPlan:
    """The :class:`GroupPlan` of :func:`pk_plan` (same arguments): ``len(plan)`` batches, ``plan.rows(b)``
    the ``P * K`` rows of batch ``b``, computed when asked for."""
    if short not in ("replace", "skip"):
        raise ValueError(f"short must be 'replace' or 'skip', got {short!r}")
    if P < 1 or K < 1:
        raise ValueError(f"P and K must be positive, got P={P}, K={K}")
    if isinstance(labels, IdentityIndex):
        row_map, starts = None, labels.starts
    else:
        lab = np.asarray(getattr(labels, "labels", labels))  # an int array or a chunk
        row_map, starts = _groups_of(lab)
    counts = np.diff(starts)
    eligible = counts >= max(min_images, 1)
    if short == "skip":
        eligible &= counts >= K
    g = np.where(counts >= K, -(-counts // K), 1)
    return GroupPlan(starts, counts, g, eligible, seed, epoch, 4, "fixed", K, P * K, P, full_only=True,
                     row_map=row_map)


def pk_plan(labels: np.ndarray | IdentityIndex, P: int, K: int, epoch: int = 0, seed: int = 0,
            short: str = "replace", min_images: int = 2) -> np.ndarray:
    """One epoch of P x K batches as an int64 array ``[batches, P * K]`` of rows.

    Rows index ``labels`` (an int array, a :class:`~kerasface.data.loaders.Chunk`'s labels, or an
    :class:`IdentityIndex`'s entries).  Every batch holds exactly ``P``
    distinct identities with ``K`` rows each, identity by identity.

    Each identity with ``count >= K`` images is shuffled and cut into
    ``ceil(count / K)`` groups of ``K`` (the last group wraps around to the
    start of the shuffle, so a group never repeats an image): every image is in
    at least one group per epoch.  An identity with ``min_images <= count < K``
    gives one group of all its images plus ``K - count`` drawn with replacement
    (``short="replace"``) or is left out (``short="skip"``).  Identities with
    fewer than ``min_images`` (default 2: one image has no positive) are left
    out.  Groups are spread over the epoch in random order and packed ``P`` at
    a time with distinct identities; groups that cannot complete a batch at the
    end of an epoch are dropped for that epoch.  Deterministic for
    ``(seed, epoch)``; a different order every epoch.
    """
    plan = pk_batch_plan(labels, P, K, epoch, seed, short, min_images)
    if not len(plan):
        return np.zeros((0, P * K), dtype=np.int64)
    return np.stack([plan.rows(b) for b in range(len(plan))])
