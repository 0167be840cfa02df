"""Verification metrics against scikit-learn and brute-force NumPy loops.

The references below are written independently of kerasface.evaluation.metrics:
plain loops over thresholds, scikit-learn's roc_curve / roc_auc_score, and the
anchors' EER rule (voxceleb_trainer's tuneThresholdfromScore) on sklearn's ROC.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from kerasface.evaluation import metrics as M

# --- independent references ---------------------------------------------------------------


def ref_accuracy(labels, scores, t):
    right = 0
    for y, s in zip(labels, scores):
        right += int((s >= t) == bool(y))
    return right / len(labels)


def ref_best(labels, scores):
    """Every candidate cut (below all, between neighbours, above all); smallest best wins."""
    u = sorted(set(float(s) for s in scores))
    cands = [u[0] - 1.0] + [(a + b) / 2 for a, b in zip(u[:-1], u[1:])] + [u[-1] + 1.0]
    best_t, best_a = None, -1.0
    for t in cands:
        a = ref_accuracy(labels, scores, t)
        if a > best_a:
            best_t, best_a = t, a
    return best_t, best_a


def ref_anchor_eer(labels, scores):
    fpr, tpr, thr = sk_roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    fnr = 1 - tpr
    i = np.nanargmin(np.absolute(fnr - fpr))
    return max(fpr[i], fnr[i]) * 100, thr[i]


def ref_rates(labels, scores, t):
    labels = np.asarray(labels, bool)
    acc = np.asarray(scores) >= t
    tpr = sum(1 for a, y in zip(acc, labels) if a and y) / labels.sum()
    fpr = sum(1 for a, y in zip(acc, labels) if a and not y) / (~labels).sum()
    return tpr, fpr


def random_case(rng, n=None, ties=True, sep=1.5):
    n = int(rng.integers(4, 80)) if n is None else n
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = rng.normal(size=n) + sep * y
    if ties:
        s = np.round(s, 1)
    return y, s


# --- ROC / AUC ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_roc_curve_matches_sklearn_on_random_scores_with_ties(seed):
    y, s = random_case(np.random.default_rng(seed))
    fpr, tpr, thr = M.roc_curve(y, s)
    f, t, th = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f)
    np.testing.assert_allclose(tpr, t)
    assert math.isinf(thr[0]) and thr[0] > 0
    np.testing.assert_allclose(thr[1:], th[1:])
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_auc_edge_cases():
    y = np.array([0, 1, 0, 1, 1, 0])
    assert M.roc_auc(y, np.ones(6)) == pytest.approx(0.5)  # all scores equal
    assert M.roc_auc(y, y * 2.0 - 1) == pytest.approx(1.0)  # perfectly separable
    assert M.roc_auc(y, 1.0 - y) == pytest.approx(0.0)  # perfectly inverted
    assert M.roc_auc(np.ones(5), np.arange(5.0)) is None  # one class only
    assert M.roc_auc(np.zeros(5), np.arange(5.0)) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0, 1], [0.0, np.nan])
    with pytest.raises(ValueError, match="length"):
        M.best_threshold([0, 1, 1], [0.0, 1.0])
    with pytest.raises(ValueError, match="no pairs"):
        M.best_threshold([], [])


# --- EER -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_eer_is_the_anchors_rule(seed):
    y, s = random_case(np.random.default_rng(100 + seed))
    eer, thr = M.equal_error_rate(y, s)
    ref_eer, ref_thr = ref_anchor_eer(y, s)
    assert eer == pytest.approx(ref_eer, abs=1e-9)
    assert thr == pytest.approx(ref_thr)


@pytest.mark.parametrize("seed", range(10))
def test_interpolated_eer_is_the_crossing_of_the_roc(seed):
    y, s = random_case(np.random.default_rng(200 + seed), n=60)
    f, t, _ = sk_roc_curve(y, s, drop_intermediate=False)
    # Dense walk along each ROC segment: where |FNR - FPR| is smallest, FNR ~= FPR = EER.
    best, val = np.inf, None
    for i in range(len(f) - 1):
        u = np.linspace(0, 1, 2001)
        fp = f[i] + u * (f[i + 1] - f[i])
        fn = 1 - (t[i] + u * (t[i + 1] - t[i]))
        k = np.argmin(np.abs(fn - fp))
        if abs(fn[k] - fp[k]) < best:
            best, val = abs(fn[k] - fp[k]), (fn[k] + fp[k]) / 2
    assert M.interpolated_eer(y, s) == pytest.approx(val * 100, abs=0.1)


def test_eer_edge_cases():
    y = np.array([0, 1] * 10)
    assert M.equal_error_rate(y, y.astype(float))[0] == pytest.approx(0.0)
    assert M.interpolated_eer(y, y.astype(float)) == pytest.approx(0.0)
    # Constant scores: the anchors' point rule lands on a corner (100 %), the crossing is 50 %.
    assert M.equal_error_rate(y, np.zeros(20))[0] == pytest.approx(ref_anchor_eer(y, np.zeros(20))[0])
    assert M.interpolated_eer(y, np.zeros(20)) == pytest.approx(50.0)
    assert M.equal_error_rate(np.ones(4), np.arange(4.0)) == (None, None)


# --- TAR @ FAR ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_tar_at_far_against_brute_force(seed):
    rng = np.random.default_rng(300 + seed)
    y, s = random_case(rng, n=400, ties=False, sep=2.0)
    n_neg = int((y == 0).sum())
    thresholds = np.r_[np.inf, np.sort(np.unique(s))[::-1]]
    for far in (k / n_neg for k in (1, 3, 10)):  # exactly reachable FARs
        best = max(ref_rates(y, s, t)[0] for t in thresholds if ref_rates(y, s, t)[1] <= far + 1e-12)
        r = M.tar_at_far(y, s, far)
        assert r["reachable"]
        assert r["tar"] == pytest.approx(best, abs=1e-12)
        assert r["tar_at_threshold"] == pytest.approx(best, abs=1e-12)
        tpr_t, fpr_t = ref_rates(y, s, r["threshold"])
        assert fpr_t <= far + 1e-12 and tpr_t == pytest.approx(best)
    # Between two reachable FARs the interpolated TAR lies between their TARs.
    lo, hi = M.tar_at_far(y, s, 2 / n_neg)["tar"], M.tar_at_far(y, s, 3 / n_neg)["tar"]
    mid = M.tar_at_far(y, s, 2.5 / n_neg)
    assert lo <= mid["tar"] <= hi
    assert mid["tar_at_threshold"] == pytest.approx(lo)


def test_tar_at_far_unreachable_with_few_negatives():
    y = np.array([1] * 300 + [0] * 300)
    s = np.random.default_rng(0).normal(size=600) + y
    r = M.tar_at_far(y, s, 1e-3)
    assert not r["reachable"] and r["tar"] is None
    assert "1000" in r["note"] and "300" in r["note"]
    assert M.tar_at_far(y, s, 1e-2)["reachable"]
    assert M.tar_at_far(np.ones(5), np.arange(5.0), 0.1)["tar"] is None


def test_tar_perfectly_separable():
    y = np.array([0, 1] * 1000)  # 1000 negatives: FAR 1e-3 is just reachable
    r = M.tar_at_far(y, y.astype(float), 1e-3)
    assert r["reachable"] and r["tar"] == pytest.approx(1.0)


# --- accuracy, best threshold, k-fold -------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_best_threshold_against_brute_force(seed):
    y, s = random_case(np.random.default_rng(400 + seed))
    t, a = M.best_threshold(y, s)
    rt, ra = ref_best(y, s)
    assert a == pytest.approx(ra)
    assert t == pytest.approx(rt)
    assert M.accuracy_at(y, s, t) == pytest.approx(ref_accuracy(y, s, t))


def test_best_threshold_edge_cases():
    y = np.array([1, 1, 1, 0])
    t, a = M.best_threshold(y, np.zeros(4))  # all equal: best is "accept all"
    assert a == pytest.approx(0.75) and M.accuracy_at(y, np.zeros(4), t) == pytest.approx(0.75)
    t, a = M.best_threshold(y, np.array([3.0, 2.0, 5.0, 1.0]))  # separable
    assert a == 1.0 and 1.0 < t < 2.0
    t, a = M.best_threshold(np.ones(3), np.array([0.1, 0.2, 0.3]))  # one class
    assert a == 1.0


def ref_kfold(labels, scores, folds):
    accs = []
    for f in sorted(set(folds)):
        tr = [i for i in range(len(folds)) if folds[i] != f]
        te = [i for i in range(len(folds)) if folds[i] == f]
        t, _ = ref_best([labels[i] for i in tr], [scores[i] for i in tr])
        accs.append(ref_accuracy([labels[i] for i in te], [scores[i] for i in te], t))
    return accs


@pytest.mark.parametrize("seed", range(5))
def test_kfold_accuracy_against_reference(seed):
    rng = np.random.default_rng(500 + seed)
    y, s = random_case(rng, n=200)
    folds = np.repeat(np.arange(10), 20)
    r = M.kfold_accuracy(y, s, folds)
    ref = ref_kfold(list(y), list(s), list(folds))
    np.testing.assert_allclose(r.accuracies, ref)
    assert r.mean == pytest.approx(np.mean(ref)) and r.std == pytest.approx(np.std(ref))
    assert r.folds == list(range(10))


def test_kfold_with_a_one_class_fold_and_a_single_fold():
    y = np.array([1, 1, 1, 1, 0, 1, 0, 1, 0, 0, 1, 0])
    s = np.array([.9, .8, .7, .95, .1, .6, .4, .75, .2, .3, .35, .5])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])  # fold 0: matched pairs only
    r = M.kfold_accuracy(y, s, folds)
    np.testing.assert_allclose(r.accuracies, ref_kfold(list(y), list(s), list(folds)))
    assert M.kfold_accuracy(y, s, np.zeros(12)) is None


def test_verification_metrics_bundle():
    rng = np.random.default_rng(7)
    y, s = random_case(rng, n=300, ties=False)
    folds = np.arange(300) % 10
    m = M.verification_metrics(y, s, folds)
    assert m["pairs"] == 300 and m["matched"] + m["mismatched"] == 300
    assert m["folds"] == 10 and len(m["fold_accuracies"]) == 10
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["eer_percent"] == pytest.approx(ref_anchor_eer(y, s)[0])
    assert set(m["tar_at_far"]) == {"0.001", "0.01"}
    assert not m["tar_at_far"]["0.001"]["reachable"]  # ~150 negatives
    one = M.verification_metrics(np.ones(4), np.arange(4.0))
    assert one["auc"] is None and one["eer_percent"] is None and one["folds"] == 1
