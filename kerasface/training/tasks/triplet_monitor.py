"""What the triplet trainer watches: a fixed probe of training faces (distances, active triplets, the
collapse test), its curves, and the case study of the hardest pairs at the end."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from kerasface.config import TripletExperiment
from kerasface.data.identities import IdentityIndex
from kerasface.data.images import read_face
from kerasface.data.pipelines import embed_images
from kerasface.data.splits import IdentitySplit
from kerasface.evaluation.cases import hardest_pairs
from kerasface.evaluation.embeddings import extract_embeddings
from kerasface.evaluation.plots import plot_case_study
from kerasface.io import atomic_path
from kerasface.ops import normalize_faces

__all__ = ["pick_probe", "probe_statistics", "embed_training_mode", "is_collapsed", "collapse_message",
           "plot_triplet_history", "eval_case_study", "probe_case_study"]


def pick_probe(train: IdentityIndex, size: int, seed: int, per_identity: int = 4) -> np.ndarray:
    """Rows of a fixed probe set: up to ``per_identity`` images of shuffled identities until ``size``."""
    rng = np.random.default_rng(seed + 7919)
    rows: list[int] = []
    for k in rng.permutation(train.num_identities):
        r = train.rows_of(int(k))
        take = min(len(r), per_identity, size - len(rows))
        if take < 2:
            break
        rows.extend(rng.choice(r, take, replace=False).tolist())
    return np.sort(np.asarray(rows, dtype=np.int64))


def probe_statistics(emb: np.ndarray, labels: np.ndarray, margin: float, squared: bool) -> dict:
    """Distances and triplet activity of a fixed probe set.

    ``mean_distance``: mean euclidean distance over every pair (collapse: ~0);
    ``pos_distance`` / ``neg_distance``: over same / different-identity pairs;
    ``active_fraction``: fraction of all valid triplets (a, p, n) of the probe
    with a positive hinge ``d(a,p) - d(a,n) + margin`` (squared distances when
    ``squared``); ``loss``: their mean hinge.
    """
    e = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    diff = e[:, None, :] - e[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    d = np.sqrt(d2)
    n = len(e)
    iu = np.triu_indices(n, k=1)
    same = labels[:, None] == labels[None, :]
    eye = np.eye(n, dtype=bool)
    pos_mask, neg_mask = same & ~eye, ~same
    dd = d2 if squared else d
    # hinge[a, p, n] for valid (a, p) and (a, n)
    hinge = dd[:, :, None] - dd[:, None, :] + margin
    valid = pos_mask[:, :, None] & neg_mask[:, None, :]
    nv = int(valid.sum())
    h = hinge[valid]
    return {
        "mean_distance": float(d[iu].mean()) if n > 1 else math.nan,
        "pos_distance": float(d[pos_mask].mean()) if pos_mask.any() else math.nan,
        "neg_distance": float(d[neg_mask].mean()) if neg_mask.any() else math.nan,
        "active_fraction": float((h > 0).mean()) if nv else math.nan,
        "loss": float(np.maximum(h, 0).mean()) if nv else math.nan,
        "triplets": nv,
    }


def embed_training_mode(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Embeddings of uint8 ``images`` as the training step sees them (BN on the batch's statistics).

    Keras updates BatchNormalization's moving statistics in a ``training=True``
    call; they are restored afterwards, so this has no effect on the model.
    """
    state = [v.numpy() for v in model.non_trainable_variables]
    x = normalize_faces(images)
    try:
        return np.asarray(keras.ops.convert_to_numpy(model(x, training=True)), dtype=np.float64)
    finally:
        for v, value in zip(model.non_trainable_variables, state):
            v.assign(value)


def is_collapsed(mean_distance: float, floor: float) -> bool:
    """True when ``floor > 0`` and the probe's mean distance is below it (or NaN)."""
    return floor > 0 and not mean_distance >= floor


def collapse_message(mean_distance: float, floor: float, epoch: int, n_probe: int) -> str:
    return (f"embeddings collapsed at epoch {epoch}: the mean distance between the {n_probe} probe faces "
            "(embedded as in training) is "
            f"{mean_distance:.3g} < the floor {floor:g} (every face maps to nearly one point: the report's failure, "
            "distances ~1e-7). Try a smaller learning rate, semi-hard rather than hardest negatives, or a margin "
            "below 2 (4 with squared distances); --collapse-floor 0 disables this check.")


def plot_triplet_history(history: dict, path, title: str = "", floor: float = 0.0) -> None:
    """curves.png: loss, probe distances (with the collapse floor), active triplets, verification."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(history.get("loss", []))
    ep = np.arange(1, n + 1)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    ax = axes[0]
    ax.plot(ep, history.get("loss", []), "o-", label="training loss (selected / mined triplets)")
    if "probe_loss" in history:
        ax.plot(ep, history["probe_loss"], "s-", label="probe loss (all probe triplets)")
    ax.set_title("triplet loss")
    ax = axes[1]
    for k, lab in (("probe_mean_distance", "all pairs"), ("probe_pos_distance", "same person"),
                   ("probe_neg_distance", "different people"),
                   ("probe_train_mean_distance", "all pairs, BN as in training (collapse test)")):
        if k in history:
            ax.plot(ep, history[k], "x--" if "train" in k else "o-", label=lab)
    if floor > 0:
        ax.axhline(floor, color="C3", ls="--", lw=1, label=f"collapse floor {floor:g}")
    ax.set_title("probe faces: mean euclidean distance")
    ax = axes[2]
    if "probe_active_fraction" in history:
        ax.plot(ep, history["probe_active_fraction"], "o-", label="probe triplets with loss > 0")
    if "selected_fraction" in history:
        ax.plot(ep, history["selected_fraction"], "s-", label="anchor-positive pairs with a semi-hard negative")
    if "triplet_accuracy" in history:
        ax.plot(ep, history["triplet_accuracy"], "^-", label="training triplets with d(a,p) < d(a,n)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("triplets")
    ax = axes[3]
    for k, lab in (("verify_accuracy", "accuracy (held-out threshold)"), ("verify_auc", "ROC AUC")):
        if k in history:
            y = np.asarray(history[k], dtype=float)
            ok = np.isfinite(y)
            ax.plot(ep[ok], y[ok], "o-", label=lab)
    ax.set_title("verification on the held-out pairs")
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.set_xlim(0.5, max(n, 1) + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, 3, never 1.5
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)



def _face_reader(source, size: int, center_crop: float):
    return lambda rel: read_face(source, rel, size, center_crop, black_if_bad=True)


def _describe(cases, rel, names) -> list:
    return [{"image1": rel[c.i], "image2": rel[c.j], "name1": names[c.i], "name2": names[c.j],
             "distance": c.distance} for c in cases]


def eval_case_study(embedder, source, td: IdentitySplit, cfg: TripletExperiment, res, run_dir: Path, score_kw) -> dict:
    """Hardest positive / negative pairs among every held-out face of the evaluation pairs."""
    ok_pairs = res.scores.pairs
    rel = list(dict.fromkeys(r for p in ok_pairs for r in (p.path1, p.path2)))
    emb = extract_embeddings(embedder, source, rel, image_size=cfg.image_size, center_crop=cfg.center_crop,
                             batch_size=score_kw["batch_size"], verbose=0)
    names = [r.split("/", 1)[0] for r in emb.relpaths]
    pos, neg, same_d, diff_d = hardest_pairs(emb.vectors, names, n=6, valid=emb.ok)
    face = _face_reader(source, 112, cfg.center_crop)
    threshold = res.metrics.get("best_threshold")
    plot_case_study(lambda i: face(emb.relpaths[i]), names, pos, neg, same_d, diff_d, run_dir / "case_study.png",
                    threshold=threshold,
                    title=f"{cfg.name}: hardest pairs among the {len(rel)} held-out faces of {td.eval_source} "
                          f"(all {len(same_d) + len(diff_d):,} pairs; red = wrong at the best threshold)")
    return {"faces": len(rel), "source": td.eval_source, "same_pairs": int(len(same_d)),
            "different_pairs": int(len(diff_d)),
            "same_mean_distance": float(np.mean(same_d)) if len(same_d) else None,
            "different_mean_distance": float(np.mean(diff_d)) if len(diff_d) else None,
            "threshold": threshold,
            "hardest_positive": _describe(pos, emb.relpaths, names),
            "hardest_negative": _describe(neg, emb.relpaths, names), "file": "case_study.png"}


def probe_case_study(probe, train: IdentityIndex, embed_fn, cfg: TripletExperiment, run_dir: Path) -> dict:
    """Without evaluation pairs: the hardest pairs among the (training) probe faces."""
    emb = embed_images(probe.images, embed_fn)
    names = [train.names[k] for k in probe.labels]
    rel = train.paths(probe.rows)
    pos, neg, same_d, diff_d = hardest_pairs(emb, names, n=6)
    plot_case_study(lambda i: probe.images[i], names, pos, neg, same_d, diff_d, run_dir / "case_study.png",
                    title=f"{cfg.name}: hardest pairs among the {len(probe)} probe faces (training identities; "
                          "no evaluation pairs)")
    return {"faces": len(probe), "source": "probe (training identities)", "same_pairs": int(len(same_d)),
            "different_pairs": int(len(diff_d)), "hardest_positive": _describe(pos, rel, names),
            "hardest_negative": _describe(neg, rel, names), "file": "case_study.png"}
