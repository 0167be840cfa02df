"""Verification metrics in plain NumPy: ROC, AUC, EER, TAR@FAR, best threshold, LFW k-fold accuracy.

Conventions (every function here):

* ``labels``: 1 (or True) for a matched pair (same person), 0 for a mismatched pair.
* ``scores``: higher means "more likely the same person". A distance ``d`` is
  scored as ``-d`` by the callers (:mod:`kerasface.evaluation.verification`),
  which turn thresholds back into distances for display.
* A pair is predicted "same" when ``score >= threshold``.

Nothing here imports TensorFlow or scikit-learn; the tests check every function
against scikit-learn and brute-force loops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "roc_curve",
    "roc_auc",
    "equal_error_rate",
    "interpolated_eer",
    "tar_at_far",
    "accuracy_at",
    "best_threshold",
    "kfold_accuracy",
    "KFoldResult",
    "verification_metrics",
]


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels and scores differ in length: {labels.size} vs {scores.size}")
    if labels.size == 0:
        raise ValueError("no pairs to evaluate")
    if not np.all(np.isfinite(scores)):
        bad = int(np.sum(~np.isfinite(scores)))
        raise ValueError(f"{bad} score(s) are NaN or infinite; the model output is not usable")
    return labels, scores


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC over every distinct score: ``(fpr, tpr, thresholds)``.

    Same points as ``sklearn.metrics.roc_curve(labels, scores,
    drop_intermediate=False)``: thresholds are the distinct scores in
    decreasing order, preceded by ``+inf`` (nothing accepted), and point ``i``
    accepts every pair with ``score >= thresholds[i]``. A class with no pairs
    gives a rate of NaN for that axis (scikit-learn warns and does the same).
    """
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # Last index of each run of equal scores: the point after accepting the whole run.
    ends = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, s[ends]]
    n_pos, n_neg = tps[-1], fps[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = tps / n_pos if n_pos > 0 else np.full_like(tps, np.nan)
        fpr = fps / n_neg if n_neg > 0 else np.full_like(fps, np.nan)
    return fpr, tpr, thresholds


def roc_auc(labels, scores) -> float | None:
    """Area under the ROC (trapezoids; ties count one half). ``None`` with a single class."""
    labels, scores = _check(labels, scores)
    if labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def equal_error_rate(labels, scores) -> tuple[float | None, float | None]:
    """EER in percent and its threshold, as the speaker/face verification anchors compute it.

    On the ROC (every distinct score as a threshold), take the point where
    ``|FNR - FPR|`` is smallest (``FNR = 1 - TPR``) and report
    ``max(FPR, FNR) * 100`` there (the ``tuneThresholdfromScore`` rule of
    voxceleb_trainer and the report-001 code). The first such point wins a tie.
    Returns ``(None, None)`` when one class is absent.
    """
    labels, scores = _check(labels, scores)
    if labels.all() or not labels.any():
        return None, None
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float(max(fpr[i], fnr[i]) * 100.0), float(thr[i])


def interpolated_eer(labels, scores) -> float | None:
    """EER in percent where the piecewise-linear ROC crosses ``FNR = FPR`` (``None`` with one class).

    Unlike :func:`equal_error_rate` (a point of the ROC) this is the exact
    crossing, so constant scores give 50 % rather than 100 %.
    """
    labels, scores = _check(labels, scores)
    if labels.all() or not labels.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    d = (1.0 - tpr) - fpr  # decreasing from 1 to -1 along the curve
    i = int(np.nonzero(d <= 0)[0][0])
    if d[i] == 0 or i == 0:
        return float(fpr[i] * 100.0)
    t = d[i - 1] / (d[i - 1] - d[i])
    return float((fpr[i - 1] + t * (fpr[i] - fpr[i - 1])) * 100.0)


def tar_at_far(labels, scores, far: float) -> dict:
    """True accept rate at a target false accept rate, interpolated on the ROC.

    The ROC's upper envelope (best TPR at each FPR) is linearly interpolated at
    ``far``; ``threshold`` is that of the last ROC point with ``FPR <= far``
    (the deterministic operating point below the target) and ``tar_at_threshold``
    its TPR. With ``n`` negative pairs the smallest non-zero FAR is ``1/n``:
    when ``far * n < 1`` the target is *unreachable* — ``tar`` is ``None`` and
    ``note`` says how many negatives it needs.
    """
    labels, scores = _check(labels, scores)
    n_neg, n_pos = int((~labels).sum()), int(labels.sum())
    out = {"far": float(far), "tar": None, "threshold": None, "tar_at_threshold": None,
           "reachable": False, "negatives": n_neg, "note": ""}
    if not 0.0 < far <= 1.0:
        raise ValueError(f"far must be in (0, 1], got {far}")
    if n_pos == 0 or n_neg == 0:
        out["note"] = "needs both matched and mismatched pairs"
        return out
    if far * n_neg < 1.0 - 1e-9:
        need = math.ceil(1.0 / far - 1e-9)
        out["note"] = f"unreachable: FAR {far:g} needs at least {need} mismatched pairs, have {n_neg}"
        return out
    fpr, tpr, thr = roc_curve(labels, scores)
    # Upper envelope: fpr is non-decreasing; for repeated fpr keep the largest tpr.
    ufpr, first = np.unique(fpr, return_index=True)
    last = np.r_[first[1:] - 1, fpr.size - 1]
    utpr = tpr[last]  # tpr is non-decreasing, so the last point of each fpr run is its max
    out["tar"] = float(np.interp(far, ufpr, utpr))
    k = int(np.nonzero(fpr <= far + 1e-12)[0][-1])
    out["threshold"], out["tar_at_threshold"] = float(thr[k]), float(tpr[k])
    out["reachable"] = True
    return out


def accuracy_at(labels, scores, threshold: float) -> float:
    """Fraction of pairs classified right with ``score >= threshold`` meaning "same"."""
    labels, scores = _check(labels, scores)
    return float(np.mean((scores >= threshold) == labels))


def best_threshold(labels, scores) -> tuple[float, float]:
    """``(threshold, accuracy)`` maximising accuracy over every distinct cut of the scores.

    The candidates are the midpoints between consecutive distinct scores plus
    one below the minimum (accept everything) and one above the maximum
    (reject everything); the smallest best candidate wins a tie. O(n log n).
    """
    labels, scores = _check(labels, scores)
    u = np.unique(scores)
    cands = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2.0, u[-1] + 1.0]
    pos = np.sort(scores[labels])
    neg = np.sort(scores[~labels])
    # same-pairs accepted: score >= t; different-pairs rejected: score < t.
    tp = pos.size - np.searchsorted(pos, cands, side="left")
    tn = np.searchsorted(neg, cands, side="left")
    acc = (tp + tn) / labels.size
    i = int(np.argmax(acc))
    return float(cands[i]), float(acc[i])


@dataclass
class KFoldResult:
    """Per-fold accuracies and the thresholds chosen on the other folds."""

    accuracies: list = field(default_factory=list)
    thresholds: list = field(default_factory=list)
    folds: list = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        """Population standard deviation over the folds (``np.std``, as LFW results are usually given)."""
        return float(np.std(self.accuracies))


def kfold_accuracy(labels, scores, folds) -> KFoldResult | None:
    """LFW View 2 protocol: for each fold, pick the threshold on the other folds, apply it to this one.

    ``folds`` gives each pair's fold id (``Pair.fold`` of ``pairs.txt``).
    Returns ``None`` when there is only one fold (use :func:`best_threshold`).
    A fold that lost all its pairs (missing images) is left out.
    """
    labels, scores = _check(labels, scores)
    folds = np.asarray(folds).ravel()
    if folds.shape != labels.shape:
        raise ValueError(f"folds has {folds.size} entries for {labels.size} pairs")
    ids = np.unique(folds)
    if ids.size < 2:
        return None
    res = KFoldResult()
    for f in ids:
        test = folds == f
        t, _ = best_threshold(labels[~test], scores[~test])
        res.accuracies.append(accuracy_at(labels[test], scores[test], t))
        res.thresholds.append(t)
        res.folds.append(int(f))
    return res


def verification_metrics(labels, scores, folds=None, far_targets=(1e-3, 1e-2)) -> dict:
    """Every metric above in one JSON-ready dict (thresholds in score units)."""
    labels, scores = _check(labels, scores)
    n_pos = int(labels.sum())
    out: dict = {"pairs": int(labels.size), "matched": n_pos, "mismatched": int(labels.size - n_pos)}
    kf = kfold_accuracy(labels, scores, folds) if folds is not None else None
    if kf is not None:
        out.update(folds=len(kf.folds), accuracy_mean=kf.mean, accuracy_std=kf.std,
                   fold_accuracies=kf.accuracies, fold_thresholds=kf.thresholds)
    else:
        out["folds"] = 1
    t, acc = best_threshold(labels, scores)
    out.update(best_threshold=t, best_threshold_accuracy=acc)
    out["auc"] = roc_auc(labels, scores)
    out["eer_percent"], out["eer_threshold"] = equal_error_rate(labels, scores)
    out["eer_interpolated_percent"] = interpolated_eer(labels, scores)
    out["tar_at_far"] = {f"{far:g}": tar_at_far(labels, scores, far) for far in far_targets}
    return out
