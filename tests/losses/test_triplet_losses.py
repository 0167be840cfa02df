"""Triplet losses, online mining and offline selection against plain NumPy loops.

Every reference below is written as explicit loops over anchors, positives and
negatives (float64), independent of the package code. Each loss is checked on
random P x K batches, on degenerate batches (one identity, all embeddings
identical, K = 1, mixed) and on embeddings of real LFW faces from the bundled
sample through a random-init NN2; loss and gradient (``tf.GradientTape``) must
be finite everywhere.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import losses as kl

EPS = 1e-12
TOL = dict(rel=1e-5, abs=1e-6)


# ----------------------------------------------------------------------------- references
def ref_pdist(emb, squared):
    emb = np.asarray(emb, np.float64)
    n = len(emb)
    d = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            s = 0.0
            for k in range(emb.shape[1]):
                s += (emb[i, k] - emb[j, k]) ** 2
            d[i, j] = s if squared else math.sqrt(max(s, EPS))
    return d


def ref_batch_all(labels, emb, margin, squared, average="positive"):
    d = ref_pdist(emb, squared)
    n = len(labels)
    total, active, valid = 0.0, 0, 0
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for q in range(n):
                if labels[q] == labels[a]:
                    continue
                loss = max(0.0, d[a, p] - d[a, q] + margin)
                total += loss
                valid += 1
                active += loss > 0
    denom = valid if average == "all" else active
    return total / denom if denom else 0.0


def ref_batch_hard(labels, emb, margin, squared, soft=False):
    d = ref_pdist(emb, squared)
    n = len(labels)
    per_anchor = []
    for a in range(n):
        pos = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [d[a, q] for q in range(n) if labels[q] != labels[a]]
        if not pos or not neg:
            continue
        gap = max(pos) - min(neg)
        per_anchor.append(math.log1p(math.exp(gap)) if soft else max(0.0, gap + margin))
    return sum(per_anchor) / len(per_anchor) if per_anchor else 0.0


def ref_semi_hard(labels, emb, margin, squared):
    d = ref_pdist(emb, squared)
    n = len(labels)
    per_pair = []
    for a in range(n):
        negatives = [q for q in range(n) if labels[q] != labels[a]]
        if not negatives:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [d[a, q] for q in negatives if d[a, q] > d[a, p]]
            d_neg = min(farther) if farther else max(d[a, q] for q in negatives)
            per_pair.append(max(0.0, d[a, p] - d_neg + margin))
    return sum(per_pair) / len(per_pair) if per_pair else 0.0


MINING = {
    "batch_all": lambda lab, e, m, sq: ref_batch_all(lab, e, m, sq),
    "batch_hard": lambda lab, e, m, sq: ref_batch_hard(lab, e, m, sq),
    "semi_hard": lambda lab, e, m, sq: ref_semi_hard(lab, e, m, sq),
}


def _loss_and_grad(loss, labels, emb):
    e = tf.Variable(np.asarray(emb, np.float32))
    with tf.GradientTape() as tape:
        value = loss(np.asarray(labels), e)
    return float(value), tape.gradient(value, e).numpy()


def _pk_batch(p, k, dim, seed, normalize=True):
    rng = np.random.default_rng(seed)
    ids = rng.choice(1000, size=p, replace=False)  # arbitrary, non-consecutive identity ids
    labels = np.repeat(ids, k)
    order = rng.permutation(p * k)  # identities interleaved, not contiguous
    emb = rng.standard_normal((p * k, dim))
    if normalize:
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return labels[order], emb[order].astype(np.float32)


# ----------------------------------------------------------------------------- mining: random
RANDOM_CASES = [  # (P, K, dim, normalize, squared, margin)
    (4, 3, 8, True, False, 0.2),
    (3, 4, 5, False, True, 1.0),
    (5, 2, 16, True, True, 0.2),
    (6, 3, 4, False, False, 0.5),
    (2, 5, 3, True, False, 1.0),
]


@pytest.mark.parametrize("case", RANDOM_CASES, ids=lambda c: "P{}K{}d{}-n{}-sq{}-m{}".format(*c))
@pytest.mark.parametrize("name", list(MINING))
def test_mining_loss_matches_reference_on_random_batches(name, case):
    p, k, dim, normalize, squared, margin = case
    labels, emb = _pk_batch(p, k, dim, seed=p * 100 + k * 10 + dim, normalize=normalize)
    loss = kl.get_triplet_loss(name, margin=margin, squared=squared)
    value, grad = _loss_and_grad(loss, labels, emb)
    want = MINING[name](labels, emb, margin, squared)
    assert want > 0  # a case where the loss has something to do
    assert value == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    # labels as a (batch, 1) column give the same value
    assert float(loss(labels[:, None], emb)) == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("name", list(MINING))
@pytest.mark.parametrize("squared", [False, True])
def test_mining_gradient_matches_finite_differences(name, squared):
    labels, emb = _pk_batch(3, 3, 4, seed=21, normalize=False)
    loss = kl.get_triplet_loss(name, margin=1.0, squared=squared)
    _, grad = _loss_and_grad(loss, labels, emb)
    x = emb.astype(np.float64)
    h, num = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (MINING[name](labels, xp, 1.0, squared) - MINING[name](labels, xm, 1.0, squared)) / (2 * h)
    assert np.abs(num).max() > 0
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-4)


def test_batch_all_average_all_and_batch_hard_soft():
    labels, emb = _pk_batch(4, 3, 6, seed=3)
    for squared in (False, True):
        got = float(kl.BatchAllTripletLoss(margin=0.3, squared=squared, average="all")(labels, emb))
        assert got == pytest.approx(ref_batch_all(labels, emb, 0.3, squared, "all"), **TOL)
        got = float(kl.BatchHardTripletLoss(squared=squared, soft=True)(labels, emb))
        assert got == pytest.approx(ref_batch_hard(labels, emb, 0.0, squared, soft=True), **TOL)
    # "all" averages over more triplets than "positive" when some triplets are already satisfied
    assert float(kl.BatchAllTripletLoss(margin=0.3, average="all")(labels, emb)) < float(
        kl.BatchAllTripletLoss(margin=0.3)(labels, emb))


def test_semi_hard_picks_semi_hard_negative_by_hand():
    # 1-D embeddings: anchor 0.0, positive 1.0 (d_ap 1); negatives at 0.5, 1.5, 3.0.
    # Semi-hard for (a=0, p=1): the closest negative beyond d_ap = 1.5 -> loss 1 - 1.5 + 1 = 0.5.
    emb = np.array([[0.0], [1.0], [0.5], [1.5], [3.0]], np.float32)
    labels = np.array([7, 7, 1, 2, 3])
    got = float(kl.SemiHardTripletLoss(margin=1.0)(labels, emb))
    # pair (1, 0): d_ap 1, negatives of 1.0 at distances 0.5, 0.5, 2.0 -> 2.0 -> loss 0
    assert got == pytest.approx((0.5 + 0.0) / 2, abs=1e-6)
    assert got == pytest.approx(ref_semi_hard(labels, emb, 1.0, False), abs=1e-6)


# ----------------------------------------------------------------------------- mining: degenerate
def _degenerate(kind):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 5)).astype(np.float32)
    if kind == "one_identity":
        return np.zeros(6, int), emb
    if kind == "identical":
        return np.array([0, 0, 1, 1, 2, 2]), np.tile(emb[:1], (6, 1))
    if kind == "identical_one_identity":
        return np.zeros(6, int), np.tile(emb[:1], (6, 1))
    if kind == "k1":
        return np.arange(6), emb
    if kind == "mixed":  # two identities with K=2, two singletons, a duplicate embedding
        emb[1] = emb[0]
        return np.array([0, 0, 1, 1, 2, 3]), emb
    if kind == "identical_pair_only":  # the only positive pair is identical
        emb[1] = emb[0]
        return np.array([0, 0, 1, 2, 3, 4]), emb
    raise AssertionError(kind)


DEGENERATE = ["one_identity", "identical", "identical_one_identity", "k1", "mixed", "identical_pair_only"]
# no valid triplet at all: loss 0 and zero gradient
NO_TRIPLET = {"one_identity", "identical_one_identity", "k1"}


@pytest.mark.parametrize("kind", DEGENERATE)
@pytest.mark.parametrize("squared", [False, True])
@pytest.mark.parametrize("name", list(MINING))
def test_mining_loss_on_degenerate_batches(name, squared, kind):
    labels, emb = _degenerate(kind)
    loss = kl.get_triplet_loss(name, margin=0.2, squared=squared)
    value, grad = _loss_and_grad(loss, labels, emb)
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(MINING[name](labels, emb, 0.2, squared), **TOL)
    if kind in NO_TRIPLET:
        assert value == 0.0
        np.testing.assert_array_equal(grad, 0.0)
    if kind == "identical":  # collapse: every triplet sits exactly at the margin
        assert value == pytest.approx(0.2, abs=1e-5)


def test_pairwise_distances_exact_and_safe():
    labels, emb = _pk_batch(3, 3, 7, seed=9, normalize=False)
    emb[4] = emb[2]
    for squared in (False, True):
        got = keras.ops.convert_to_numpy(kl.pairwise_distances(emb, squared=squared))
        want = ref_pdist(emb, squared)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert (np.diag(got) == 0).all()
        e = tf.Variable(emb)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(kl.pairwise_distances(e, squared=squared))
        assert np.isfinite(tape.gradient(total, e).numpy()).all()


# ----------------------------------------------------------------------------- stack losses
def ref_stack_loss(stack, name, margin):
    out = []
    for row in np.asarray(stack, np.float64):
        dp, dn = row[0, 0], row[1, 0]
        if name.endswith("_squared"):
            dp, dn = dp * dp, dn * dn
        if name.startswith("hinge"):
            out.append(max(0.0, dp - dn + margin))
        else:
            out.append(dp - dn)
    return np.array(out)


STACK = ["hinge", "hinge_squared", "difference", "difference_squared"]


@pytest.mark.parametrize("name", STACK)
def test_stack_losses_match_reference(name):
    rng = np.random.default_rng(len(name))
    stack = rng.uniform(0, 2, (16, 2, 1)).astype(np.float32)
    kwargs = {"margin": 0.5} if name.startswith("hinge") else {}
    loss = kl.get_triplet_loss(name, **kwargs)
    per = ref_stack_loss(stack, name, 0.5)
    assert float(loss(np.zeros(16), stack)) == pytest.approx(per.mean(), **TOL)
    # y_true is ignored
    assert float(loss(rng.standard_normal((16, 2, 1)), stack)) == pytest.approx(per.mean(), **TOL)
    # per-triplet values reduced by Keras: sample weights behave as for built-in losses
    w = rng.uniform(0, 1, 16)
    assert float(loss(np.zeros(16), stack, sample_weight=w)) == pytest.approx((per * w).sum() / 16, **TOL)
    if name.startswith("hinge"):
        assert 0 < (per > 0).sum() < 16  # both active and satisfied triplets in the case


@pytest.mark.parametrize("name", STACK)
def test_stack_losses_finite_gradient_at_collapse(name):
    # the report's collapse: identical embeddings -> distances sqrt(eps); loss = margin, no NaN
    from kerasface.layers import EuclideanDistance, StackDistances

    e = tf.Variable(np.ones((4, 8), np.float32))
    loss = kl.get_triplet_loss(name)
    with tf.GradientTape() as tape:
        d = EuclideanDistance()([e, e * 1.0])
        value = loss(np.zeros(4), StackDistances()([d, d]))
    grad = tape.gradient(value, e).numpy()
    assert np.isfinite(float(value)) and np.isfinite(grad).all()
    assert float(value) == pytest.approx(0.2 if name.startswith("hinge") else 0.0, abs=1e-6)


def test_metrics_accuracy_and_mean_distance():
    stack = np.array([[[0.1], [0.5]], [[0.5], [0.1]], [[0.3], [0.3]], [[0.0], [1.0]]], np.float32)
    acc = kl.TripletAccuracy()
    acc.update_state(np.zeros(4), stack)
    assert float(acc.result()) == pytest.approx(2 / 4)  # ties (collapse) count as wrong
    neg = kl.TripletDistanceMean("neg")
    neg.update_state(np.zeros(4), stack)
    assert float(neg.result()) == pytest.approx(np.mean([0.5, 0.1, 0.3, 1.0]))
    assert neg.name == "mean_neg_dist"
    with pytest.raises(ValueError):
        kl.TripletDistanceMean("both")


# ----------------------------------------------------------------------------- registry / config
ALL_LOSSES = [
    kl.TripletHingeLoss(margin=0.7, squared=True, name="h"),
    kl.TripletDifferenceLoss(squared=True),
    kl.BatchAllTripletLoss(margin=0.4, squared=True, average="all", epsilon=1e-10),
    kl.BatchHardTripletLoss(margin=0.3, soft=True),
    kl.SemiHardTripletLoss(margin=0.6, squared=True, reduction="sum"),
    kl.TripletAccuracy(name="acc"),
    kl.TripletDistanceMean("pos"),
]


@pytest.mark.parametrize("obj", ALL_LOSSES, ids=lambda o: type(o).__name__)
def test_loss_and_metric_configs_round_trip(obj):
    blob = keras.saving.serialize_keras_object(obj)
    assert blob["registered_name"] == f"kerasface>{type(obj).__name__}"
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is type(obj) and clone.get_config() == obj.get_config()


def test_get_triplet_loss_names():
    assert set(kl.TRIPLET_LOSSES) == set(STACK) | set(MINING)
    assert kl.get_triplet_loss("hinge_squared").squared is True
    assert kl.get_triplet_loss("semi_hard", margin=0.5).margin == 0.5
    with pytest.raises(ValueError, match="unknown triplet loss"):
        kl.get_triplet_loss("lifted")
    with pytest.raises(ValueError, match="fixes"):
        kl.get_triplet_loss("hinge_squared", squared=False)


# ----------------------------------------------------------------------------- real faces
@pytest.fixture(scope="module")
def face_embeddings(sample_dir: Path):
    """12 real faces (4 identities x 3) through a random-init NN2 at 64x64 (inference mode)."""
    from kerasface.data import load_images
    from kerasface.models import facenet_nn2

    root = sample_dir / "lfw"
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 3)[:4]
    rels = [f"{n}/{f.name}" for n in names for f in sorted((root / n).glob("*.jpg"))[:3]]
    images, ok = load_images(root, rels, size=64, progress=False)
    assert ok.all()
    x = (images.astype(np.float32) - 127.5) / 128.0
    labels = np.repeat(np.arange(4), 3)
    keras.utils.set_random_seed(4)
    model = facenet_nn2(input_shape=(64, 64, 3))
    emb = keras.ops.convert_to_numpy(model(x, training=False))
    return model, x, labels, emb


def test_real_face_embeddings_losses_match_reference(face_embeddings):
    _, _, labels, emb = face_embeddings
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert len({tuple(np.round(e, 6)) for e in emb}) == 12  # twelve distinct embeddings
    for name, ref in MINING.items():
        for squared in (False, True):
            margin = 0.05
            value, grad = _loss_and_grad(kl.get_triplet_loss(name, margin=margin, squared=squared), labels, emb)
            assert value == pytest.approx(ref(labels, emb, margin, squared), rel=1e-4, abs=1e-6), name
            assert np.isfinite(grad).all()


def test_real_faces_gradient_through_nn2_is_finite(face_embeddings):
    model, x, labels, _ = face_embeddings
    loss = kl.SemiHardTripletLoss(margin=0.2)
    with tf.GradientTape() as tape:
        value = loss(labels, model(x, training=True))
    grads = tape.gradient(value, model.trainable_weights)
    assert np.isfinite(float(value)) and float(value) > 0
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    assert sum(float(tf.reduce_sum(tf.abs(g))) for g in grads) > 0


def test_real_faces_select_triplets(face_embeddings):
    _, _, labels, emb = face_embeddings
    d = ref_pdist(emb, True)
    margin = float(np.median(d[d > 0]))  # a margin at the scale of these (random-init) distances
    got = kl.select_triplets(emb, labels, margin, rng=0)
    _check_selection(got, emb, labels, margin, squared=True, fallback="skip", both_orders=False)
    assert len(got) > 0


# ----------------------------------------------------------------------------- offline selection
def ref_candidates(emb, labels, margin, squared):
    """{(a, p): [semi-hard negatives]} for every ordered same-identity pair, by loops."""
    d = ref_pdist(emb, squared)
    n = len(labels)
    out = {}
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            out[(a, p)] = [q for q in range(n)
                           if labels[q] != labels[a] and d[a, q] > d[a, p] and d[a, q] - d[a, p] < margin]
    return d, out


def _check_selection(got, emb, labels, margin, squared, fallback, both_orders):
    d, cands = ref_candidates(emb, labels, margin, squared)
    pairs = {k: v for k, v in cands.items() if both_orders or k[0] < k[1]}
    has_negatives = {a for a in range(len(labels)) if any(labels != labels[a])}
    assert got.dtype == np.int64 and got.ndim == 2 and got.shape[1] == 3
    got_pairs = [(int(a), int(p)) for a, p, _ in got]
    assert len(got_pairs) == len(set(got_pairs))  # one triplet per pair
    if fallback == "skip":
        assert set(got_pairs) == {k for k, v in pairs.items() if v}
    else:
        assert set(got_pairs) == {k for k in pairs if k[0] in has_negatives}
    for a, p, q in got:
        a, p, q = int(a), int(p), int(q)
        assert labels[a] == labels[p] and labels[q] != labels[a]
        if pairs[(a, p)]:
            assert q in pairs[(a, p)]
        elif fallback == "hardest":
            negs = [m for m in range(len(labels)) if labels[m] != labels[a]]
            assert q == min(negs, key=lambda m: (d[a, m], m))
    assert got_pairs == sorted(got_pairs)


@pytest.fixture(scope="module")
def chunk():
    labels, emb = _pk_batch(8, 5, 16, seed=42)
    labels = np.concatenate([labels, [5000]])  # a singleton identity: never an anchor pair
    emb = np.concatenate([emb, emb[:1] * -1.0])
    return labels, emb


@pytest.mark.parametrize("fallback", ["skip", "hardest", "random"])
@pytest.mark.parametrize("squared,margin", [(True, 0.3), (False, 0.15)])
@pytest.mark.parametrize("both_orders", [False, True])
def test_select_triplets_against_brute_force(chunk, fallback, squared, margin, both_orders):
    labels, emb = chunk
    _, cands = ref_candidates(emb, labels, margin, squared)
    n_with = sum(1 for v in cands.values() if v)
    assert 0 < n_with < len(cands)  # the case has pairs with and without semi-hard negatives
    got = kl.select_triplets(emb, labels, margin, squared=squared, fallback=fallback,
                             both_orders=both_orders, rng=1)
    _check_selection(got, emb, labels, margin, squared, fallback, both_orders)


def test_select_triplets_random_choice_and_determinism(chunk):
    labels, emb = chunk
    _, cands = ref_candidates(emb, labels, 0.6, True)
    a1 = kl.select_triplets(emb, labels, 0.6, rng=123)
    np.testing.assert_array_equal(a1, kl.select_triplets(emb, labels, 0.6, rng=123))
    # over seeds, a pair with several semi-hard negatives gets different ones
    pair = max((k for k in cands if k[0] < k[1]), key=lambda k: len(cands[k]))
    assert len(cands[pair]) >= 3
    chosen = set()
    for seed in range(30):
        got = kl.select_triplets(emb, labels, 0.6, rng=seed)
        row = got[(got[:, 0] == pair[0]) & (got[:, 1] == pair[1])]
        chosen.add(int(row[0, 2]))
    assert len(chosen) >= 2 and chosen <= set(cands[pair])


def test_select_triplets_degenerate_chunks():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((5, 4))
    assert kl.select_triplets(emb, np.zeros(5), 1.0, fallback="random").shape == (0, 3)  # one identity
    assert kl.select_triplets(emb, np.arange(5), 1.0, fallback="random").shape == (0, 3)  # K = 1
    same = np.tile(emb[:1], (4, 1))  # collapse: d_an == d_ap, nothing is strictly farther
    assert kl.select_triplets(same, np.array([0, 0, 1, 1]), 1.0).shape == (0, 3)
    hard = kl.select_triplets(same, np.array([0, 0, 1, 1]), 1.0, fallback="hardest")
    np.testing.assert_array_equal(hard, [[0, 1, 2], [2, 3, 0]])
    with pytest.raises(ValueError, match="fallback"):
        kl.select_triplets(emb, np.zeros(5), 1.0, fallback="closest")
    with pytest.raises(ValueError, match="expected embeddings"):
        kl.select_triplets(emb, np.zeros(4), 1.0)
