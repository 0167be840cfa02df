"""The hardest cases of an evaluation, in NumPy: what the pictures of :mod:`kerasface.evaluation.plots` show.

* :func:`hardest_cases`: of scored evaluation pairs (:class:`~kerasface.evaluation.verification.PairScores`),
  the mismatched pairs with the highest scores (false accepts when over the threshold) and the matched
  pairs with the lowest (false rejects when under it).
* :func:`hardest_pairs`: the monograph's case study over a *set of faces* with identity labels:
  every pair of faces is scored by the euclidean distance of its L2-normalised embeddings;

  * hardest **positive** pairs: same identity, largest distance (the model
    thinks two photos of one person are far apart);
  * hardest **negative** pairs: different identities, smallest distance (two
    people the model confuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CasePair", "hardest_cases", "hardest_pairs", "pairwise_l2"]


def hardest_cases(ps, threshold_display: float, n: int) -> tuple[list, list]:
    """``(false_accepts, false_rejects)`` of the :class:`~kerasface.evaluation.verification.PairScores` ``ps``:
    up to ``n`` mismatched pairs with the highest scores and ``n`` matched pairs with the lowest, each
    ``(pair, display score, is_error)``."""
    neg = np.nonzero(~ps.labels)[0]
    pos = np.nonzero(ps.labels)[0]
    fa = neg[np.argsort(-ps.scores[neg], kind="mergesort")[:n]]
    fr = pos[np.argsort(ps.scores[pos], kind="mergesort")[:n]]
    t = -threshold_display if ps.score_name in ("l2", "l2sq") else threshold_display
    return ([(ps.pairs[i], ps.to_display(float(ps.scores[i])), bool(ps.scores[i] >= t)) for i in fa],
            [(ps.pairs[i], ps.to_display(float(ps.scores[i])), bool(ps.scores[i] < t)) for i in fr])


@dataclass
class CasePair:
    i: int
    j: int
    distance: float
    same: bool


def pairwise_l2(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances between all rows, ``(n, n)`` float64 (explicit differences in blocks)."""
    v = np.asarray(vectors, dtype=np.float64)
    n = len(v)
    out = np.empty((n, n), dtype=np.float64)
    step = max(1, 4_000_000 // max(1, n * v.shape[1]))
    for s in range(0, n, step):
        d = v[s:s + step, None, :] - v[None, :, :]
        out[s:s + step] = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
    return out


def hardest_pairs(vectors: np.ndarray, labels: Sequence, n: int = 6,
                  valid: np.ndarray | None = None) -> tuple[list[CasePair], list[CasePair], np.ndarray, np.ndarray]:
    """``(positives, negatives, same_distances, different_distances)`` over every unordered pair.

    ``positives``: up to ``n`` same-label pairs with the largest distances,
    largest first; ``negatives``: up to ``n`` different-label pairs with the
    smallest distances, smallest first (ties: lower indices first). Rows with
    ``valid`` False (undecodable images) take part in no pair.
    """
    labels = np.asarray(labels)
    d = pairwise_l2(vectors)
    iu, ju = np.triu_indices(len(labels), k=1)
    keep = np.ones(len(iu), bool) if valid is None else (np.asarray(valid)[iu] & np.asarray(valid)[ju])
    iu, ju = iu[keep], ju[keep]
    dist = d[iu, ju]
    same = labels[iu] == labels[ju]
    pos = np.flatnonzero(same)
    neg = np.flatnonzero(~same)
    pos = pos[np.argsort(-dist[pos], kind="stable")[:n]]
    neg = neg[np.argsort(dist[neg], kind="stable")[:n]]
    mk = lambda k, s: CasePair(int(iu[k]), int(ju[k]), float(dist[k]), s)  # noqa: E731
    return [mk(k, True) for k in pos], [mk(k, False) for k in neg], dist[same], dist[~same]
