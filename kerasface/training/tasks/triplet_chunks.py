"""One chunk of a triplet epoch: its training data (offline-selected triplets or P x K batches) and the
epoch's running tally; used by :class:`~kerasface.training.tasks.triplet.TripletTask`."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from kerasface.config import TripletExperiment
from kerasface.data.pipelines import offline_triplet_dataset, pk_batches
from kerasface.data.sampling import pk_plan
from kerasface.losses import select_triplets

__all__ = ["EpochTally", "chunk_dataset", "fit_verbosity"]


def fit_verbosity(verbose) -> int:
    """Keras ``fit`` verbosity of one chunk: a bar on a terminal with ``"auto"``, none with ``2`` (``--quiet``)."""
    if verbose == "auto":
        return 1 if sys.stderr.isatty() else 0
    return int(verbose or 0) if verbose != 2 else 0


@dataclass
class EpochTally:
    """One epoch's running sums over its chunks."""

    loss_sum: float = 0.0
    loss_n: float = 0.0
    acc_sum: float = 0.0
    triplets: int = 0
    ap_pairs: int = 0
    batches: int = 0
    selected: int = 0  # offline: triplets selected, before --max-triplets-per-chunk

    def logs(self, offline: bool) -> dict:
        logs: dict = {"loss": self.loss_sum / self.loss_n if self.loss_n else math.nan}
        if not offline:
            logs["batches"] = self.batches
        else:
            logs.update(triplets=self.triplets, selected=self.selected,
                        selected_fraction=self.selected / self.ap_pairs if self.ap_pairs else math.nan,
                        triplet_accuracy=self.acc_sum / self.loss_n if self.loss_n else math.nan)
        return logs


def chunk_dataset(cfg: TripletExperiment, chunk, epoch: int, P: int, embed_fn, tally: EpochTally) -> tuple:
    """``(dataset, steps, weight)`` of one chunk: selected triplets (offline) or P x K batches.

    ``weight`` is what the chunk's loss is weighted by in the epoch's mean (triplets, or batches);
    ``tally`` gathers the epoch's counts.
    """
    chunk_seed = (cfg.seed * 1_000_003 + epoch * 1009 + chunk.number) & 0x7FFFFFFF
    if cfg.mining != "offline":
        # a chunk with fewer than P identities (the tail of an epoch) gives no batch
        steps = len(pk_plan(chunk, P, cfg.k_images, epoch=0, seed=chunk_seed))
        tally.batches += steps
        return (pk_batches(chunk, P, cfg.k_images, seed=chunk_seed) if steps else None), steps, steps
    rng = np.random.default_rng(chunk_seed)

    def selector(emb, labels):
        t = select_triplets(emb, labels, cfg.margin, squared=cfg.squared, fallback=cfg.selection_fallback, rng=rng)
        tally.selected += len(t)
        if cfg.max_triplets_per_chunk and len(t) > cfg.max_triplets_per_chunk:
            t = t[np.sort(rng.choice(len(t), cfg.max_triplets_per_chunk, replace=False))]
        return t

    ds, trip = offline_triplet_dataset(chunk, embed_fn, selector, batch_size=cfg.batch_size, seed=chunk_seed,
                                       return_triplets=True)
    _, counts = np.unique(chunk.labels, return_counts=True)
    tally.ap_pairs += int((counts * (counts - 1) // 2).sum())
    weight = len(trip)
    tally.triplets += weight
    return ds, -(-weight // cfg.batch_size), weight
