"""Chunked loading of an identity index (FaceNet monograph).

The monograph trained on 1.7M photos by loading "trunks" of 1,000 / 8,000
photos at a time.  Here :class:`ChunkedLoader` walks an
:class:`~kerasface.data.identities.IdentityIndex` (a compact file list of any
size) in *chunks* of at most ``chunk_size`` images, decoding only the chunk's
images (:class:`~kerasface.data.images.ImageDecoder`: thread pool, OpenCV) into
one uint8 array ``[n, s, s, 3]``.  Memory is bounded by the chunk (at most
``2 + prefetch`` chunks alive), not by the data set: an epoch is planned per
identity group (:mod:`kerasface.data.sampling`, about one entry per ``M``
images) and a chunk's rows are computed only when it is loaded.  Two sampling
modes, both seeded and deterministic, both reshuffled every epoch:

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
instead).  The ``tf.data`` pipelines over chunks (P x K batches, offline
triplets) are :mod:`kerasface.data.pipelines`.

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

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .identities import IdentityIndex
from .images import ImageDecoder
from .sampling import balanced_chunk_plan, cover_chunk_plan

__all__ = ["Chunk", "ChunkedLoader"]


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

    def __init__(self, index, chunk_size: int = 1000, images_per_identity: int = 40,
                 identities_per_chunk: int | None = None, mode: str = "cover", image_size: int = 112,
                 center_crop: float = 1.0, seed: int = 0, num_workers: int | None = None, prefetch: int = 1,
                 on_error: str = "skip"):
        if not isinstance(index, IdentityIndex):
            index = IdentityIndex.open(index)
        if mode not in ("cover", "balanced"):
            raise ValueError(f"mode must be 'cover' or 'balanced', got {mode!r}")
        if images_per_identity < 1 or chunk_size < images_per_identity:
            raise ValueError(f"need 1 <= images_per_identity <= chunk_size, got M={images_per_identity}, "
                             f"chunk_size={chunk_size}")
        if mode == "balanced":
            identities_per_chunk = identities_per_chunk or chunk_size // images_per_identity
            if identities_per_chunk * images_per_identity > chunk_size:
                raise ValueError(f"identities_per_chunk x images_per_identity = {identities_per_chunk} x "
                                 f"{images_per_identity} exceeds chunk_size {chunk_size}")
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
        self._decoder = ImageDecoder(index, image_size, center_crop, num_workers, on_error)
        self._next_epoch = 0
        self._plan_cache: tuple = (-1, None)

    # -------------------------------------------------------------- planning
    def _epoch_plan(self, epoch: int):
        if self._plan_cache[0] != epoch:
            if self.mode == "cover":
                plan = cover_chunk_plan(self.index, epoch, self.seed, self.images_per_identity, self.chunk_size,
                                        self.identities_per_chunk)
            else:
                plan = balanced_chunk_plan(self.index, epoch, self.seed, self.identities_per_chunk,
                                           self.images_per_identity)
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
        self._decoder.stats.count_chunk()
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
