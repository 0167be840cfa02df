"""Offline triplet selection over a chunk of embeddings (NumPy), FaceNet style.

The monograph loads its data in chunks ("trunks": 1,000 or 8,000 photos of a
bounded set of identities), embeds a chunk with the current model, selects
triplets from it and trains on them. :func:`select_triplets` is the selection
step: every anchor-positive pair of the chunk gets one random *semi-hard*
negative,

    d_an > d_ap   and   d_an - d_ap < margin

with squared distances by default (``d_an^2 - d_ap^2 < margin``, the paper's
alpha). The negative lies farther than the positive but inside the margin:
the triplet still has a positive loss, yet it is not the hardest negative,
which the FaceNet paper found to collapse the model early in training.
"""

from __future__ import annotations

import numpy as np

__all__ = ["select_triplets"]

_FALLBACKS = ("skip", "hardest", "random")


def select_triplets(embeddings, labels, margin=0.2, *, squared=True, fallback="skip",
                    both_orders=False, rng=None) -> np.ndarray:
    """Choose ``(anchor, positive, negative)`` index triplets from one chunk.

    Args:
        embeddings: ``(n, dim)`` embeddings of the chunk's images.
        labels: ``(n,)`` identity labels (any hashable values NumPy can compare).
        margin: the semi-hard window, in the units of the distance used
            (squared distances by default, as in the FaceNet paper).
        squared: compare squared euclidean distances (default) or plain ones.
        fallback: what an anchor-positive pair with no semi-hard negative gets:
            ``"skip"`` (default; no triplet, as in FaceNet's reference code),
            ``"hardest"`` (the anchor's closest negative, ties -> lowest index)
            or ``"random"`` (a uniformly random negative).
        both_orders: use both ``(i, j)`` and ``(j, i)`` of every same-identity
            pair; by default each unordered pair once, anchor = lower index.
        rng: a ``numpy.random.Generator`` or a seed (``None``: fresh entropy).

    Returns:
        ``int64`` array ``(m, 3)`` of indices into ``embeddings``, sorted by
        anchor then positive (shuffle before training). Identities with one
        image give no pair; a chunk with one identity gives no triplet
        (shape ``(0, 3)``).
    """
    if fallback not in _FALLBACKS:
        raise ValueError(f"fallback must be one of {_FALLBACKS}, got {fallback!r}")
    emb = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if emb.ndim != 2 or labels.shape != (emb.shape[0],):
        raise ValueError(f"expected embeddings (n, dim) and labels (n,), got {emb.shape} and "
                         f"{labels.shape}")
    rng = np.random.default_rng(rng)
    sq_norms = np.einsum("ij,ij->i", emb, emb)
    out = []
    for identity in np.unique(labels):
        members = np.flatnonzero(labels == identity)
        if members.size < 2:
            continue
        negatives = np.flatnonzero(labels != identity)
        if negatives.size == 0:
            continue
        # distances from each member to every image of the chunk: (k, n)
        d = sq_norms[members, None] - 2.0 * emb[members] @ emb.T + sq_norms[None, :]
        d = np.maximum(d, 0.0)
        if not squared:
            d = np.sqrt(d)
        for ia, a in enumerate(members):
            d_neg = d[ia, negatives]
            for p in members:
                if p == a or (not both_orders and p < a):
                    continue
                d_ap = d[ia, p]
                ok = np.flatnonzero((d_neg > d_ap) & (d_neg - d_ap < margin))
                if ok.size:
                    n = negatives[rng.choice(ok)]
                elif fallback == "hardest":
                    n = negatives[int(np.argmin(d_neg))]
                elif fallback == "random":
                    n = negatives[rng.integers(negatives.size)]
                else:
                    continue
                out.append((int(a), int(p), int(n)))
    triplets = np.asarray(out, dtype=np.int64).reshape(-1, 3)
    order = np.lexsort((triplets[:, 1], triplets[:, 0]))
    return triplets[order]
