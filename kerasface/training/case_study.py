"""The monograph's case-study pages: the hardest positive and negative pairs of a set of faces.

Given L2-normalised embeddings of faces with identity labels, every pair of
faces is scored by its euclidean distance:

* hardest **positive** pairs: same identity, largest distance (the model
  thinks two photos of one person are far apart);
* hardest **negative** pairs: different identities, smallest distance (two
  people the model confuses).

:func:`hardest_pairs` finds them (NumPy); :func:`plot_case_study` draws them,
with their distances, under a histogram of all same / different distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["CasePair", "hardest_pairs", "pairwise_l2", "plot_case_study"]


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


def plot_case_study(face: Callable[[int], np.ndarray], names: Sequence[str], positives: list[CasePair],
                    negatives: list[CasePair], same_d: np.ndarray, diff_d: np.ndarray, path,
                    threshold: float | None = None, title: str = "") -> None:
    """Draw the histogram of distances and the hardest pairs (``face(i)`` returns face ``i`` as uint8 RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kerasface.io import atomic_path

    cols = max(len(positives), len(negatives), 1)
    width = max(2.5 * cols, 8)
    row = width / cols / 2 + 0.75  # a side-by-side face pair is twice as wide as high, plus its title
    fig = plt.figure(figsize=(width, 3.2 + 2 * row))
    grid = fig.add_gridspec(3, cols, height_ratios=[3.2, row, row])
    ax = fig.add_subplot(grid[0, :])
    bins = np.linspace(0.0, max(2.0, float(np.max(np.concatenate([same_d, diff_d, [0.0]])))), 61)
    if len(diff_d):
        ax.hist(diff_d, bins=bins, density=True, alpha=0.55, color="C3",
                label=f"different people ({len(diff_d):,} pairs, mean {np.mean(diff_d):.3f})")
    if len(same_d):
        ax.hist(same_d, bins=bins, density=True, alpha=0.55, color="C0",
                label=f"same person ({len(same_d):,} pairs, mean {np.mean(same_d):.3f})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("euclidean distance between L2-normalised embeddings")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    rows = [("hardest positive pairs: same person, largest distance", positives),
            ("hardest negative pairs: different people, smallest distance", negatives)]
    for r, (heading, cases) in enumerate(rows, start=1):
        for c in range(cols):
            a = fig.add_subplot(grid[r, c])
            a.axis("off")
            if c == 0:
                a.text(-0.06, 0.5, heading.replace(": ", ":\n"), transform=a.transAxes, rotation=90,
                       va="center", ha="right", fontsize=7.5)
            if c >= len(cases):
                continue
            p = cases[c]
            a.imshow(np.concatenate([face(p.i), face(p.j)], axis=1))
            wrong = threshold is not None and ((p.distance > threshold) if p.same else (p.distance <= threshold))
            who = names[p.i] if p.same else f"{names[p.i]}\n{names[p.j]}"
            a.set_title(f"{who}\ndistance {p.distance:.3f}", fontsize=7, color="C3" if wrong else "black")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
