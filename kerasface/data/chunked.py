"""Chunked loading, P x K identity batches and offline triplet selection (FaceNet monograph).

The monograph trained on 1.7M photos by loading "trunks" of 1,000 / 8,000
photos at a time.  Here:

* :class:`ChunkedLoader` walks an :class:`~kerasface.data.identities.IdentityIndex`
  (a compact file list of any size) in *chunks* of at most ``chunk_size``
  images, decoding only the chunk's images (thread pool, OpenCV) into one
  uint8 array ``[n, s, s, 3]``.  Memory is bounded by the chunk (at most
  ``2 + prefetch`` chunks alive), not by the data set: an epoch is planned per
  identity group (about one entry per ``M`` images) and a chunk's rows are
  computed only when it is loaded.  Two sampling modes, both seeded and
  deterministic, both reshuffled every epoch:

  - ``mode="cover"`` (default): every image of the index is in exactly one
    chunk per epoch.  Each identity's images are shuffled and split into
    ``ceil(count / M)`` groups of near-equal size (at most
    ``M = images_per_identity``); groups are spread over the epoch
    (stratified random order) and packed into chunks, never two groups of one
    identity in the same chunk.  So a chunk holds at most ``M`` images of any
    identity, and identities with many images appear in many chunks.
  - ``mode="balanced"``: FaceNet's "N identities x M images": the identities
    are shuffled every epoch and taken ``N = identities_per_chunk`` at a time;
    each contributes ``min(M, count)`` images, taken from a fixed per-identity
    shuffle at an offset that advances by ``M`` every epoch (so over
    ``ceil(count / M)`` epochs every image is used).  An epoch visits every
    identity once, not every image.

  A chunk is a :class:`Chunk` (``images``, ``labels``, ``rows``); within it the
  images are grouped by identity.  Unreadable or corrupt images are skipped,
  logged and counted in :attr:`ChunkedLoader.stats` (``on_error="raise"`` stops
  instead).

* :func:`pk_batches`: a ``tf.data`` pipeline of batches of exactly ``P``
  identities x ``K`` images, for online mining losses (batch-hard,
  batch semi-hard), either from a decoded chunk or streaming from an index.

* :func:`offline_triplet_dataset`: FaceNet's offline selection within a chunk:
  embed the chunk with the current model, let a selector pick
  (anchor, positive, negative) triplets, return a ``tf.data.Dataset`` of
  ``((anchor, positive, negative), dummy_y)`` batches for a three-input
  triplet model.

TensorFlow is imported only by the functions that build datasets.

Typical FaceNet-style loop (``select`` is a triplet selector such as a
semi-hard one; ``embedder`` the model that maps faces to embeddings)::

    index = IdentityIndex.open("lfw.zip").select(fold_identities("pairs.txt", range(9), exclude_folds=[9]))
    loader = ChunkedLoader(index.filter(min_images=2), chunk_size=1000, images_per_identity=40, image_size=224)
    for epoch in range(epochs):
        for chunk in loader.epoch(epoch):
            ds = offline_triplet_dataset(chunk, lambda x: embedder(x, training=False), select, batch_size=80)
            triplet_model.fit(ds, epochs=1, verbose=0)
    print(loader.stats)  # images decoded, corrupt / missing skipped, images/s
"""

from __future__ import annotations

import logging
import os
import threading
import time
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from .identities import IdentityIndex
from .images import CorruptImageError, _crop_resize, decode_image

logger = logging.getLogger("kerasface.data")

__all__ = [
    "Chunk",
    "ChunkedLoader",
    "pk_plan",
    "pk_batches",
    "embed_images",
    "select_triplets",
    "triplet_dataset",
    "offline_triplet_dataset",
]

_N_NAMES = 5  # example names kept in stats / log lines
_LOOKAHEAD = 64  # deferred units scanned when a chunk or batch is refilled


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


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


class _UnitPlan:
    """One epoch's chunks (or batches) of identity groups; rows are computed per chunk.

    ``split="even"``: identity k's shuffled images are dealt round-robin into
    ``g[k]`` groups of near-equal size (every image in exactly one group).
    ``split="fixed"``: groups of exactly ``size`` images: with ``count >= size``
    group j is shuffled positions ``j*size .. j*size+size-1`` wrapping around
    (no image twice in a group); with ``count < size`` all images plus
    ``size - count`` drawn with replacement.
    """

    def __init__(self, starts, counts, g, eligible, seed, epoch, tag, split, size, capacity, max_units, full_only=False, row_map=None):
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
        key = (j + _rng(seed, epoch, tag).random(len(ident))) / np.maximum(g[ident], 1)
        order = np.argsort(key, kind="stable")
        units, self.bounds = _pack(ident, unit_size, order, capacity, max_units, full_only)
        self.ident = ident[units]
        self.j = j[units]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def unit_rows(self, k: int, j: int) -> np.ndarray:
        c = int(self.counts[k])
        rng = _rng(self.seed, self.epoch, self.tag, k)
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


class _BalancedPlan:
    """``N`` shuffled identities per chunk, ``min(M, count)`` images each from a fixed per-identity shuffle."""

    def __init__(self, starts, counts, seed, epoch, N, M):
        self.starts, self.counts, self.seed, self.epoch, self.N, self.M = starts, counts, seed, epoch, N, M
        ids = np.flatnonzero(counts > 0)
        self.ids = ids[_rng(seed, epoch, 3).permutation(len(ids))]

    def __len__(self) -> int:
        return -(-len(self.ids) // self.N)

    def rows(self, b: int) -> np.ndarray:
        parts = []
        for k in self.ids[b * self.N:(b + 1) * self.N].tolist():
            c = int(self.counts[k])
            perm = _rng(self.seed, 0, 2, k).permutation(c)  # the same every epoch
            pos = perm if c <= self.M else perm[(self.epoch * self.M + np.arange(self.M)) % c]
            parts.append(int(self.starts[k]) + pos.astype(np.int64))
        return np.concatenate(parts)


# --------------------------------------------------------------------------- decoding
@dataclass
class Chunk:
    """One decoded chunk.

    ``images``: uint8 ``[n, s, s, 3]`` RGB; ``labels``: int32 ``[n]`` identity
    labels of the index; ``rows``: int64 ``[n]`` entry rows of the index;
    ``epoch`` and ``number`` (position in the epoch); ``skipped``: images of the
    planned chunk that could not be read or decoded (not in ``images``).
    """

    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    epoch: int = -1
    number: int = -1
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def identity_counts(self) -> dict[int, int]:
        """``{label: images in this chunk}``."""
        u, c = np.unique(self.labels, return_counts=True)
        return dict(zip(u.tolist(), c.tolist()))


@dataclass
class _Stats:
    chunks: int = 0
    images: int = 0
    corrupt: int = 0
    missing: int = 0
    decode_seconds: float = 0.0
    bad_names: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self.lock:
            return {"chunks": self.chunks, "images": self.images, "corrupt": self.corrupt, "missing": self.missing,
                    "skipped": self.corrupt + self.missing, "bad_names": list(self.bad_names),
                    "decode_seconds": round(self.decode_seconds, 3),
                    "images_per_s": round(self.images / self.decode_seconds, 1) if self.decode_seconds > 0 else None}


class _Decoder:
    """Reads and decodes index rows with a thread pool into a preallocated uint8 array."""

    def __init__(self, index: IdentityIndex, image_size: int, center_crop: float, num_workers: Optional[int], on_error: str):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        if not 0.0 < center_crop <= 1.0:
            raise ValueError(f"center_crop must be in (0, 1], got {center_crop}")
        self.index = index
        self.size = int(image_size)
        self.center_crop = float(center_crop)
        self.on_error = on_error
        self.num_workers = int(num_workers or _default_workers())
        self.stats = _Stats()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._read = index.reader()

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="kerasface-decode")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def decode(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(images, ok)`` for ``rows``; rows that failed are black and ``ok`` False (or raise)."""
        rows = np.asarray(rows, dtype=np.int64)
        n = len(rows)
        s = self.size
        out = np.empty((n, s, s, 3), dtype=np.uint8)
        paths = self.index.paths(rows)
        t0 = time.perf_counter()

        def work(i: int):
            p = paths[i]
            try:
                data = self._read(p)
            except (OSError, KeyError) as e:
                if self.on_error == "raise":
                    raise
                out[i] = 0
                return ("missing", p, e)
            try:
                out[i] = _crop_resize(decode_image(data, p), s, self.center_crop)
            except CorruptImageError as e:
                if self.on_error == "raise":
                    raise
                out[i] = 0
                return ("corrupt", p, e)
            return None

        results = list(self.pool().map(work, range(n))) if n > 1 else [work(i) for i in range(n)]
        ok = np.fromiter((r is None for r in results), dtype=bool, count=n)
        bad = [r for r in results if r is not None]
        with self.stats.lock:
            self.stats.decode_seconds += time.perf_counter() - t0
            self.stats.images += int(ok.sum())
            for kind, p, _ in bad:
                if kind == "corrupt":
                    self.stats.corrupt += 1
                else:
                    self.stats.missing += 1
                if len(self.stats.bad_names) < _N_NAMES:
                    self.stats.bad_names.append(p)
        if bad:
            logger.warning("skipped %d unreadable/corrupt image(s) of %d; first: %s", len(bad), n,
                           "; ".join(f"{p} ({kind}: {e})" for kind, p, e in bad[:_N_NAMES]))
        return out, ok


# --------------------------------------------------------------------------- chunked loader
class ChunkedLoader:
    """Iterate an :class:`IdentityIndex` in decoded chunks of at most ``chunk_size`` images.

    Args:
        index: the file list (an :class:`IdentityIndex`, or anything
            :meth:`IdentityIndex.open` accepts).
        chunk_size: the most images in one chunk (the monograph's trunk: 1000 or 8000).
        images_per_identity: ``M``, the most images of one identity in a chunk.
        identities_per_chunk: ``N``; in ``"balanced"`` mode the identities of a
            chunk (default ``chunk_size // M``; ``N * M`` may not exceed
            ``chunk_size``); in ``"cover"`` mode an optional cap (default none).
        mode: ``"cover"`` (every image once per epoch) or ``"balanced"``
            (N identities x M images per chunk, every identity once per epoch);
            see the module docstring.
        image_size, center_crop: decoded images are the central square of
            ``center_crop`` x the shorter side, resized to ``image_size``.
        seed: the plan of epoch ``e`` depends only on ``(seed, e)`` and the index.
        num_workers: decoding threads (default: CPU count, at most 8).
        prefetch: chunks decoded ahead in a background thread while the
            caller works on the current one (0: none).  Peak memory is about
            ``(1 + prefetch) x chunk_size x image_size^2 x 3`` bytes plus the index.
        on_error: ``"skip"`` (default) drops unreadable/corrupt images from their
            chunk and counts them in :attr:`stats`; ``"raise"`` re-raises.

    Iterating the loader runs the next epoch (0, 1, 2, ...);
    :meth:`epoch` runs a given one; :meth:`plan` returns an epoch's chunks as
    index rows without decoding anything.
    """

    def __init__(self, index, chunk_size: int = 1000, images_per_identity: int = 40, identities_per_chunk: Optional[int] = None,
                 mode: str = "cover", image_size: int = 112, center_crop: float = 1.0, seed: int = 0,
                 num_workers: Optional[int] = None, prefetch: int = 1, on_error: str = "skip"):
        if not isinstance(index, IdentityIndex):
            index = IdentityIndex.open(index)
        if mode not in ("cover", "balanced"):
            raise ValueError(f"mode must be 'cover' or 'balanced', got {mode!r}")
        if images_per_identity < 1 or chunk_size < images_per_identity:
            raise ValueError(f"need 1 <= images_per_identity <= chunk_size, got M={images_per_identity}, chunk_size={chunk_size}")
        if mode == "balanced":
            identities_per_chunk = identities_per_chunk or chunk_size // images_per_identity
            if identities_per_chunk * images_per_identity > chunk_size:
                raise ValueError(f"identities_per_chunk x images_per_identity = {identities_per_chunk} x {images_per_identity} exceeds chunk_size {chunk_size}")
        if identities_per_chunk is not None and identities_per_chunk < 1:
            raise ValueError(f"identities_per_chunk must be positive, got {identities_per_chunk}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.index = index
        self.chunk_size = int(chunk_size)
        self.images_per_identity = int(images_per_identity)
        self.identities_per_chunk = identities_per_chunk
        self.mode = mode
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.prefetch = int(prefetch)
        self._decoder = _Decoder(index, image_size, center_crop, num_workers, on_error)
        self._next_epoch = 0
        self._plan_cache: tuple = (-1, None)

    # -------------------------------------------------------------- planning
    def _epoch_plan(self, epoch: int):
        if self._plan_cache[0] != epoch:
            idx = self.index
            counts = idx.counts
            if self.mode == "cover":
                M = self.images_per_identity
                plan = _UnitPlan(idx.starts, counts, -(-counts // M), counts > 0, self.seed, epoch, 1, "even", M,
                                 self.chunk_size, self.identities_per_chunk or self.chunk_size)
            else:
                plan = _BalancedPlan(idx.starts, counts, self.seed, epoch, self.identities_per_chunk, self.images_per_identity)
            self._plan_cache = (epoch, plan)
        return self._plan_cache[1]

    def num_chunks(self, epoch: int = 0) -> int:
        """Number of chunks in ``epoch``."""
        return len(self._epoch_plan(epoch))

    def chunk_rows(self, epoch: int, number: int) -> np.ndarray:
        """Index rows (int64) of chunk ``number`` of ``epoch``, identity by identity."""
        return self._epoch_plan(epoch).rows(number)

    def plan(self, epoch: int) -> list[np.ndarray]:
        """All chunks of ``epoch`` as int64 arrays of index rows (no decoding).

        This lists every row of the epoch (8 bytes per image); iterating does
        not: it computes each chunk's rows when the chunk is loaded.
        """
        p = self._epoch_plan(epoch)
        return [p.rows(b) for b in range(len(p))]

    def __len__(self) -> int:
        return self.num_chunks(self._next_epoch)

    # -------------------------------------------------------------- loading
    def load(self, rows: np.ndarray, epoch: int = -1, number: int = -1) -> Chunk:
        """Decode the index rows ``rows`` into a :class:`Chunk` (failed images dropped)."""
        rows = np.asarray(rows, dtype=np.int64)
        images, ok = self._decoder.decode(rows)
        skipped = int((~ok).sum())
        if skipped:  # compact in place: the chunk keeps one allocation
            keep = np.flatnonzero(ok)
            for j, i in enumerate(keep.tolist()):
                if i != j:
                    images[j] = images[i]
            images = images[:len(keep)]
            rows = rows[keep]
        with self._decoder.stats.lock:
            self._decoder.stats.chunks += 1
        return Chunk(images, np.asarray(self.index.labels[rows], dtype=np.int32), rows, epoch, number, skipped)

    def epoch(self, epoch: int) -> Iterator[Chunk]:
        """Decoded chunks of ``epoch``, in plan order (the next ones decoding in the background)."""
        plan = self._epoch_plan(epoch)
        n = len(plan)

        def job(k: int) -> Chunk:
            return self.load(plan.rows(k), epoch, k)

        if not self.prefetch or n < 2:
            for k in range(n):
                yield job(k)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="kerasface-prefetch") as bg:
            ahead: deque = deque(bg.submit(job, k) for k in range(min(self.prefetch + 1, n)))
            nxt = len(ahead)
            try:
                while ahead:
                    chunk = ahead.popleft().result()
                    yield chunk
                    del chunk
                    if nxt < n:  # submitted only once the caller asks for the next chunk
                        ahead.append(bg.submit(job, nxt))
                        nxt += 1
            finally:
                for f in ahead:
                    f.cancel()

    def __iter__(self) -> Iterator[Chunk]:
        e = self._next_epoch
        self._next_epoch += 1
        return self.epoch(e)

    def chunks(self, epochs: int = 1, start_epoch: int = 0) -> Iterator[Chunk]:
        """Chunks of ``epochs`` consecutive epochs from ``start_epoch``."""
        for e in range(start_epoch, start_epoch + epochs):
            yield from self.epoch(e)

    @property
    def stats(self) -> dict:
        """Counts so far: ``chunks``, ``images`` decoded, ``corrupt``, ``missing``, ``skipped``,
        ``bad_names`` (first few), ``decode_seconds``, ``images_per_s``."""
        return self._decoder.stats.as_dict()

    def close(self) -> None:
        """Stop the decoding threads and close a zip source."""
        self._decoder.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ChunkedLoader(mode={self.mode!r}, chunk_size={self.chunk_size}, M={self.images_per_identity}, "
                f"N={self.identities_per_chunk}, image_size={self.image_size}, seed={self.seed}, index={self.index!r})")


# --------------------------------------------------------------------------- P x K batches
def _as_images_labels(data) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, Chunk):
        return data.images, data.labels
    images, labels = data
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def _pk_unit_plan(labels, P: int, K: int, epoch: int, seed: int, short: str, min_images: int) -> _UnitPlan:
    if short not in ("replace", "skip"):
        raise ValueError(f"short must be 'replace' or 'skip', got {short!r}")
    if P < 1 or K < 1:
        raise ValueError(f"P and K must be positive, got P={P}, K={K}")
    if isinstance(labels, IdentityIndex):
        row_map, starts = None, labels.starts
    else:
        lab = labels.labels if isinstance(labels, Chunk) else np.asarray(labels)
        row_map, starts = _groups_of(lab)
    counts = np.diff(starts)
    eligible = counts >= max(min_images, 1)
    if short == "skip":
        eligible &= counts >= K
    g = np.where(counts >= K, -(-counts // K), 1)
    return _UnitPlan(starts, counts, g, eligible, seed, epoch, 4, "fixed", K, P * K, P, full_only=True, row_map=row_map)


def pk_plan(labels: Union[np.ndarray, IdentityIndex, Chunk], P: int, K: int, epoch: int = 0, seed: int = 0,
            short: str = "replace", min_images: int = 2) -> np.ndarray:
    """One epoch of P x K batches as an int64 array ``[batches, P * K]`` of rows.

    Rows index ``labels`` (an int array, a :class:`Chunk`'s labels, or an
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
    plan = _pk_unit_plan(labels, P, K, epoch, seed, short, min_images)
    if not len(plan):
        return np.zeros((0, P * K), dtype=np.int64)
    return np.stack([plan.rows(b) for b in range(len(plan))])


def _normalize(x):
    import tensorflow as tf

    return (tf.cast(x, tf.float32) - 127.5) / 128.0


def pk_batches(data, P: int, K: int, *, seed: int = 0, short: str = "replace", min_images: int = 2,
               dtype: str = "float32", repeat: bool = False, image_size: int = 112, center_crop: float = 1.0,
               num_workers: Optional[int] = None, on_error: str = "skip"):
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
        decoder = _Decoder(data, image_size, center_crop, num_workers, on_error)
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
        plan = _pk_unit_plan(data if streaming else labels_all, P, K, e, seed, short, min_images)
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
        ds = ds.map(lambda x, y: (_normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(2)
    if decoder is not None:
        ds.kerasface_stats = lambda: dict(decoder.stats.as_dict(), dropped_batches=dropped[0])
    return ds


# --------------------------------------------------------------------------- offline triplets
def embed_images(images: np.ndarray, embed_fn: Callable, batch_size: int = 128, normalize: bool = True) -> np.ndarray:
    """Embeddings of uint8 ``images`` ``[n, s, s, 3]`` as float32 ``[n, d]``.

    ``embed_fn`` takes a batch (float32 ``(x - 127.5) / 128`` when
    ``normalize``, else the uint8 batch) and returns its embeddings, for
    example ``lambda x: model(x, training=False)`` or ``model.predict_on_batch``.
    """
    out = []
    for b in range(0, len(images), batch_size):
        x = images[b:b + batch_size]
        if normalize:
            x = (x.astype(np.float32) - 127.5) / 128.0
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


def select_triplets(embeddings: np.ndarray, labels: np.ndarray, selector: Callable) -> np.ndarray:
    """Call ``selector(embeddings, labels)`` and check its answer: int64 ``[T, 3]`` (anchor, positive, negative).

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


def triplet_dataset(images: np.ndarray, triplets: np.ndarray, batch_size: int = 32, *, shuffle: bool = True, seed: int = 0,
                    dtype: str = "float32", dummy_shape: Sequence[int] = (2, 1), drop_remainder: bool = False):
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
        order = _rng(seed, e, 5).permutation(len(triplets)) if shuffle else np.arange(len(triplets))
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
        ds = ds.map(lambda x, y: ((_normalize(x[0]), _normalize(x[1]), _normalize(x[2])), y),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


def offline_triplet_dataset(chunk, embed_fn: Callable, selector: Callable, batch_size: int = 32, *,
                            embed_batch_size: int = 128, shuffle: bool = True, seed: int = 0, dtype: str = "float32",
                            dummy_shape: Sequence[int] = (2, 1), drop_remainder: bool = False, return_triplets: bool = False):
    """FaceNet's offline triplet selection within one chunk, as a ready ``tf.data.Dataset``.

    1. embed every image of ``chunk`` (a :class:`Chunk` or ``(images, labels)``)
       with ``embed_fn`` (see :func:`embed_images`; images are normalised
       ``(x - 127.5) / 128`` first);
    2. ``selector(embeddings, labels)`` returns int ``[T, 3]``
       (anchor, positive, negative) row indices -- e.g. semi-hard negatives
       with ``d(a, p) < d(a, n) < d(a, p) + margin`` -- checked by
       :func:`select_triplets`;
    3. return :func:`triplet_dataset` over those triplets: batches of
       ``((anchor, positive, negative), dummy_y)``.

    With ``return_triplets=True`` returns ``(dataset, triplets)``.  Call it again
    for each chunk (the model changes between chunks, so do the triplets).
    """
    images, labels = _as_images_labels(chunk)
    emb = embed_images(images, embed_fn, batch_size=embed_batch_size, normalize=True)
    triplets = select_triplets(emb, labels, selector)
    if len(triplets) == 0:
        logger.warning("the selector found no triplets in a chunk of %d images", len(images))
    ds = triplet_dataset(images, triplets, batch_size, shuffle=shuffle, seed=seed, dtype=dtype,
                         dummy_shape=dummy_shape, drop_remainder=drop_remainder)
    return (ds, triplets) if return_triplets else ds
