"""Every picture of kerasface: training curves (as the reports draw them), ROC with EER and TAR@FAR,
the hardest evaluation pairs, and the monograph's case study of a set of faces.

The maths behind the pictures is in :mod:`kerasface.evaluation.metrics` and
:mod:`kerasface.evaluation.cases` (NumPy); this module only draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from kerasface.data.images import read_face
from kerasface.evaluation.cases import CasePair, hardest_cases
from kerasface.evaluation.metrics import roc_curve
from kerasface.io import save_figure

__all__ = ["CURVE_PANELS", "plot_history", "plot_roc", "plot_case_pairs", "plot_case_study"]


#: The panel order of every trainer's curves.png: the loss first, then accuracy, the held-out agreement with a
#: distillation teacher, then verification.
CURVE_PANELS = ("loss", "accuracy", "val_teacher_cosine", "verify_eer", "verify_accuracy")


def plot_history(history: dict, path, title: str = "", metrics=CURVE_PANELS) -> None:
    """Save one panel per metric present (in the order of ``metrics``), train and ``val_`` curves against
    the epoch, on integer epoch ticks."""
    present = [m for m in metrics if m in history]
    if not present:
        raise ValueError(f"history has none of {metrics}: {sorted(history)}")
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4), squeeze=False)
    for ax, m in zip(axes[0], present):
        epochs = range(1, len(history[m]) + 1)
        verify = m.startswith("verify_")  # verification metrics of the evaluation pairs (no train/val pair)
        held_out = m.startswith("val_")  # a held-out-only metric (no training counterpart)
        label = f"evaluation pairs: {m[7:]}" if verify else f"held-out {m[4:]}" if held_out else f"train {m}"
        ax.plot(epochs, history[m], "o-", label=label)
        if f"val_{m}" in history:
            ax.plot(range(1, len(history[f"val_{m}"]) + 1), history[f"val_{m}"], "s-",
                    label=f"validation {m}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, 3, never 1.5
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.set_title(f"verification {m[7:]}{' (%)' if m == 'verify_eer' else ''}" if verify
                     else f"held-out {m[4:]}" if held_out else f"training and validation {m}")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def _save(fig, path) -> None:
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def plot_roc(labels, scores, path, metrics: dict | None = None, title: str = "") -> None:
    """Two panels: the ROC (linear axes, EER point, AUC) and TAR against FAR on a log axis.

    ``metrics`` (from :func:`~kerasface.evaluation.verification.evaluate_pairs`)
    adds the EER point, AUC and the TAR@FAR targets to the legend.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    m = metrics or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    label = "ROC" if m.get("auc") is None else f"ROC (AUC {m['auc']:.4f})"
    ax1.plot(fpr, tpr, "-", lw=1.6, label=label)
    ax1.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="chance")
    if m.get("eer_percent") is not None:
        i = int(np.argmin(np.abs((1 - tpr) - fpr)))  # the EER's ROC point (metrics.equal_error_rate)
        ax1.plot([fpr[i]], [tpr[i]], "o", color="C3", label=f"EER {m['eer_percent']:.2f} %")
    ax1.set_xlabel("false accept rate (FPR)")
    ax1.set_ylabel("true accept rate (TPR)")
    ax1.set_xlim(0, 1)
    ax1.set_ylim(0, 1.01)
    ax1.grid(alpha=0.3)
    ax1.legend(loc="lower right")
    ax1.set_title("ROC")
    keep = fpr > 0
    if keep.any():
        ax2.semilogx(fpr[keep], tpr[keep], "-", lw=1.6)
        lo = fpr[keep].min()
        ax2.set_xlim(min(lo, 1e-3) / 2, 1)
    for far, t in (m.get("tar_at_far") or {}).items():
        if t.get("reachable"):
            ax2.plot([t["far"]], [t["tar"]], "s", label=f"TAR {100 * t['tar']:.1f} % @ FAR {far}")
        else:
            ax2.axvline(t["far"], ls="--", color="grey", lw=1, label=f"FAR {far}: too few negatives")
    ax2.set_xlabel("false accept rate (log)")
    ax2.set_ylabel("true accept rate")
    ax2.set_ylim(0, 1.01)
    ax2.grid(alpha=0.3, which="both")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="lower right")
    ax2.set_title("TAR against FAR")
    sub = []
    if m.get("pairs_accounting"):
        sub.append(f"{m['pairs_accounting']['evaluated']} pairs")
    if m.get("score"):
        sub.append(f"score: {m['score']}")
    if m.get("accuracy_mean") is not None:
        sub.append(f"{m['folds']}-fold accuracy {100 * m['accuracy_mean']:.2f} +- {100 * m['accuracy_std']:.2f} %")
    fig.suptitle(" | ".join(filter(None, [title] + sub)))
    _save(fig, path)


def plot_case_pairs(pair_scores, source, path, threshold: float, n: int = 6, size: int = 112,
                    center_crop: float = 1.0) -> None:
    """The ``n`` hardest mismatched pairs (false accepts when over the threshold) and matched pairs
    (false rejects when under it), each face pair with its names and score."""
    fa, fr = hardest_cases(pair_scores, threshold, n)
    rows = [("mismatched pairs,\nhighest scores", fa, "false accept"),
            ("matched pairs,\nlowest scores", fr, "false reject")]
    cols = max(len(fa), len(fr), 1)
    # each pair image is 2.6 x 1.3 in with a 3-line title above it: rows sized to that, no blank band between
    fig, axes = plt.subplots(2, cols, figsize=(2.6 * cols, 4.4), squeeze=False)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.02, top=0.88, wspace=0.06, hspace=0.5)
    unit = pair_scores.score_name

    def face(rel):
        return read_face(source, rel, size, center_crop, black_if_bad=True)

    for r, (heading, cases, err_name) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(cases):
                continue
            pair, score, is_error = cases[c]
            ax.imshow(np.concatenate([face(pair.path1), face(pair.path2)], axis=1))
            verdict = err_name if is_error else "correct"
            ax.set_title(f"{pair.name1}\n{pair.name2 if pair.name2 != pair.name1 else '(same person)'}\n"
                         f"{unit} {score:.3f} - {verdict}", fontsize=7,
                         color="C3" if is_error else "black")
        axes[r][0].text(-0.05, 0.5, heading, transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    fig.suptitle(f"hardest pairs (threshold {threshold:.4f}; red = error)")
    _save(fig, path)


def plot_case_study(face: Callable[[int], np.ndarray], names: Sequence[str], positives: list[CasePair],
                    negatives: list[CasePair], same_d: np.ndarray, diff_d: np.ndarray, path,
                    threshold: float | None = None, title: str = "") -> None:
    """Draw the histogram of distances and the hardest pairs of :func:`~kerasface.evaluation.cases.hardest_pairs`
    (``face(i)`` returns face ``i`` as uint8 RGB)."""
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
    save_figure(fig, path, dpi=100)
    plt.close(fig)
