"""The loss forms of report 002's code (``utils.py``, ``train_TS.py`` of davidjaw/NTU-DLCV-final-Face-Recognition),
each against an independent NumPy transcription of that code, plus finite gradients on degenerate inputs:
threshold hard mining, the davidsandberg centre loss, batch-hard triplet averaged over every anchor,
the mean-reduced embedding L2, the epsilon soft cross entropy, the projected soft cross entropy and
the doubling summation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import (
    CenterLoss,
    batch_hard_triplet_loss,
    embedding_l2_loss,
    soft_cross_entropy,
    threshold_instance_weights,
)
from kerasface.models import DistillationModel


def value_and_grad(fn, *arrays):
    xs = [tf.Variable(np.asarray(a, np.float32)) for a in arrays]
    with tf.GradientTape() as tape:
        out = fn(*[tf.identity(x) for x in xs])
    grads = tape.gradient(out, xs)
    return float(out), [None if g is None else g.numpy() for g in grads]


def np_ce(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_q[np.arange(len(labels)), labels]


def np_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# --- threshold hard mining (utils.LossFunctions, hard_mining_threshold=.7) --------------------------


def np_threshold_mean(losses, t):
    """tf.reduce_mean(tf.where(loss < max * t, loss * t, loss)), element by element."""
    m = max(losses)
    return float(np.mean([v * t if v < m * t else v for v in losses]))


@pytest.mark.parametrize("t", [0.7, 0.3, 0.95])
def test_threshold_weights_match_the_authors_rule(t):
    losses = np.random.default_rng(0).gamma(2.0, size=17).astype(np.float32)
    w = threshold_instance_weights(losses, t).numpy()
    assert float(np.mean(w * losses)) == pytest.approx(np_threshold_mean(losses.tolist(), t), rel=1e-6)
    assert set(np.unique(w).tolist()) <= {np.float32(t), 1.0} and w[np.argmax(losses)] == 1.0


@pytest.mark.parametrize("logits", [np.zeros((6, 4)), np.full((6, 4), 1e4), np.eye(6, 4) * 80.0])
def test_threshold_mined_ce_gradient_finite_on_degenerate_logits(logits):
    labels = np.array([0, 1, 2, 3, 0, 1])

    def fn(z):
        per = keras.ops.sparse_categorical_crossentropy(labels, z, from_logits=True)
        return keras.ops.mean(per * threshold_instance_weights(per, 0.7))

    loss, (g,) = value_and_grad(fn, logits)
    assert np.isfinite(loss) and np.isfinite(g).all()
    # equal losses: none is below 0.7 x max, so the plain mean
    if not np.any(logits):
        assert loss == pytest.approx(np.log(4.0), rel=1e-5)


# --- davidsandberg centre loss (utils.get_center_loss, alfa 0.95) -----------------------------------


def np_sandberg_step(centers, x, labels, alfa):
    """loss = mean((x - c[y])^2) with the old centres; then scatter_sub row by row (duplicates add up)."""
    c_batch = centers[labels]
    loss = np.mean((x - c_batch) ** 2)
    new = centers.copy()
    for i, y in enumerate(labels):
        new[y] -= (1 - alfa) * (c_batch[i] - x[i])
    return loss, new


def test_sandberg_centre_loss_two_steps_match_the_authors_code():
    rng = np.random.default_rng(1)
    layer = CenterLoss(num_classes=5, alpha=0.95, update="sandberg")
    centers = np.zeros((5, 6), np.float32)
    for labels in (np.array([0, 2, 2, 4, 0, 2, 1]), np.array([3, 3, 0, 2, 2, 2, 2])):
        x = rng.normal(size=(7, 6)).astype(np.float32)
        got = float(layer([x, labels], training=True))
        want, centers = np_sandberg_step(centers, x, labels, 0.95)
        assert got == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(layer.centers.numpy(), centers, rtol=1e-5, atol=1e-6)
    assert layer.get_config()["update"] == "sandberg"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert again.update == "sandberg" and again.alpha == 0.95


@pytest.mark.parametrize("x", [np.zeros((4, 3)), np.full((4, 3), 1e3)])
def test_sandberg_centre_loss_gradient_finite_on_degenerate_inputs(x):
    layer = CenterLoss(num_classes=2, alpha=0.95, update="sandberg")
    labels = np.array([0, 0, 1, 1])
    for _ in range(2):
        loss, (g,) = value_and_grad(lambda e: layer([e, labels], training=True), x)
        assert np.isfinite(loss) and np.isfinite(g).all()
    with pytest.raises(ValueError, match="update"):
        CenterLoss(3, update="other")


# --- batch-hard triplet over every anchor (omoindrot's, copied into utils.py) ---------------------


def np_batch_hard_all(labels, emb, margin):
    """omoindrot's batch_hard_triplet_loss (squared=False), transcribed with NumPy."""
    dot = emb @ emb.T
    sq = np.diag(dot)
    d = np.maximum(sq[None, :] - 2 * dot + sq[:, None], 0.0)
    mask0 = (d == 0).astype(float)
    d = np.sqrt(d + mask0 * 1e-16) * (1 - mask0)
    eye = np.eye(len(labels), dtype=bool)
    same = labels[None, :] == labels[:, None]
    pos = (same & ~eye).astype(float)
    neg = (~same).astype(float)
    hardest_pos = (pos * d).max(axis=1)
    hardest_neg = (d + d.max(axis=1, keepdims=True) * (1 - neg)).min(axis=1)
    return float(np.mean(np.maximum(hardest_pos - hardest_neg + margin, 0.0)))


@pytest.mark.parametrize("labels", [[0, 0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 1, 1, 1, 1]])
def test_batch_hard_over_all_anchors_matches_the_authors_code(labels):
    labels = np.array(labels)
    emb = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    got = float(batch_hard_triplet_loss(labels, emb, margin=1.0, average="all"))
    assert got == pytest.approx(np_batch_hard_all(labels, emb.astype(np.float64), 1.0), rel=1e-5)
    if len(set(labels.tolist())) == len(labels):  # no positive anywhere: "valid" has nothing to average
        assert float(batch_hard_triplet_loss(labels, emb, margin=1.0)) == 0.0 and got > 0.0


@pytest.mark.parametrize("emb", [np.zeros((6, 4)), np.ones((6, 4))])
def test_batch_hard_over_all_anchors_gradient_finite_when_collapsed(emb):
    labels = np.array([0, 0, 1, 1, 2, 3])
    loss, (g,) = value_and_grad(lambda e: batch_hard_triplet_loss(labels, e, margin=1.0, average="all"), emb)
    assert np.isfinite(loss) and np.isfinite(g).all() and loss == pytest.approx(1.0, abs=1e-5)


# --- distillation terms of train_TS.py ----------------------------------------------------------


def test_mean_embedding_l2_and_epsilon_soft_ce_match_train_ts():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(5, 9)), rng.normal(size=(5, 9))
    assert float(embedding_l2_loss(s, t, "mean")) == pytest.approx(np.mean((s - t) ** 2), rel=1e-5)
    assert float(embedding_l2_loss(s, t, "sum")) == pytest.approx(np.mean(np.sum((s - t) ** 2, 1)), rel=1e-5)
    zs, zt = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    want = np.mean(np.sum(-np_softmax(zt) * np.log(np_softmax(zs) + 1e-6), -1))
    assert float(soft_cross_entropy(zs, zt, 1.0, "ce_eps")) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("scale", [0.0, 1e4])
def test_epsilon_soft_ce_gradient_finite_on_extreme_logits(scale):
    zs = np.eye(4, 6) * scale
    zt = -np.eye(4, 6) * scale
    loss, (g,) = value_and_grad(lambda a: soft_cross_entropy(a, zt, 1.0, "ce_eps"), zs)
    assert np.isfinite(loss) and np.isfinite(g).all()
    assert loss <= -np.log(1e-6) + 1e-3


# --- the model: the authors' teacher loss (level 2) and student loss, by hand ---------------------


def _dense_backbone(dim_in, dim, name):
    inp = keras.Input((dim_in,), name="image")
    return keras.Model(inp, keras.layers.Dense(dim, name="pre")(inp), name=name)


def test_teacher_loss_with_doubling_matches_the_authors_calculate_loss():
    """utils.LossFunctions.calculate_loss at finetune level 2, with every factor, computed in NumPy."""
    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    n_cls, b = 5, 10
    model = DistillationModel(_dense_backbone(6, 8, "bb"), n_cls, center_weight=1e-4, center_alpha=0.95,
                              center_update="sandberg", prelogit_norm_weight=1e-4, triplet_weight=1.0,
                              triplet_margin=1.0, triplet_embedding_dim=4, triplet_normalize=False,
                              triplet_average="all", hard_mining_threshold=0.7, loss_sum="doubling")
    x = rng.normal(size=(b, 6)).astype(np.float32)
    y = np.array([0, 0, 1, 2, 2, 3, 4, 4, 1, 3], np.int32)
    got = float(model.compute_loss(x={"image": x, "label": y}, training=True))

    pre = x @ model.backbone.get_layer("pre").kernel.numpy() + model.backbone.get_layer("pre").bias.numpy()
    logits = pre @ model.classifier.kernel.numpy() + model.classifier.bias.numpy()
    emb = pre @ model.triplet_embedding.kernel.numpy() + model.triplet_embedding.bias.numpy()
    pln = np.mean(np.sum(np.abs(pre) + 1e-4, axis=1)) * 1e-4
    center = np.mean(pre ** 2) * 1e-4  # centres start at zero
    trip = np_batch_hard_all(y, emb.astype(np.float64), 1.0)
    ce = np_threshold_mean(np_ce(logits, y).tolist(), 0.7)
    loss = ce
    loss += pln + loss
    loss += center + loss
    loss += trip + loss
    assert got == pytest.approx(loss, rel=1e-4)
    once = DistillationModel.sum_terms(model, {"ce": ce, "prelogit_norm": pln, "center": center, "triplet": trip})
    assert float(once) == pytest.approx(8 * ce + 4 * pln + 2 * center + trip, rel=1e-6)


def test_student_loss_matches_train_ts():
    """train_TS.py: mean squared (projection(s) - t) + soft CE(projection classifier) + 0.5 soft CE + hard CE."""
    rng = np.random.default_rng(5)
    keras.utils.set_random_seed(5)
    n_cls = 4
    t_in = keras.Input((6,), name="image")
    t_pre = keras.layers.Dense(9, name="t_pre")(t_in)
    teacher = keras.Model(t_in, [t_pre, keras.layers.Dense(n_cls, name="t_logits")(t_pre)], name="teacher")
    model = DistillationModel(_dense_backbone(6, 3, "student"), n_cls, teacher=teacher, embedding_l2_weight=1.0,
                              embedding_l2_reduction="mean", projected_soft_ce_weight=1.0, soft_ce_weight=0.5,
                              soft_ce_kind="ce_eps", temperature=1.0, projection_bias=True)
    x = rng.normal(size=(7, 6)).astype(np.float32)
    y = rng.integers(0, n_cls, size=7).astype(np.int32)
    terms = model.loss_terms(x, y, model.backbone(x), model(x))
    got = float(model.sum_terms(terms))

    t_emb, t_logits = (v.numpy() for v in teacher(x))
    s_pre = model.backbone(x).numpy()
    logits = model(x).numpy()
    s_embed = s_pre @ model.distill_projection.kernel.numpy() + model.distill_projection.bias.numpy()
    s_embed_pred = s_embed @ model.projection_classifier.kernel.numpy() + model.projection_classifier.bias.numpy()

    def soft(a, b):
        return np.mean(np.sum(-np_softmax(b) * np.log(np_softmax(a) + 1e-6), -1))

    want = np.mean((s_embed - t_emb) ** 2) + soft(s_embed_pred, t_logits) + 0.5 * soft(logits, t_logits) \
        + np.mean(np_ce(logits, y))
    assert got == pytest.approx(want, rel=1e-4)
    again = DistillationModel.from_config(model.get_config())
    assert again.projection_classifier is not None and again.loss_sum == "once"


def test_two_mining_rules_together_are_refused():
    with pytest.raises(ValueError, match="pick one"):
        DistillationModel(_dense_backbone(3, 2, "b"), 2, hard_mining_fraction=0.5, hard_mining_threshold=0.7)
