"""Center loss, pre-logit norm, hard instance mining and distillation terms: NumPy references,
centre updates, degenerate inputs."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import (
    CenterLoss,
    embedding_l2_loss,
    hard_cross_entropy,
    hard_instance_count,
    hard_instance_weights,
    logit_mse_loss,
    prelogit_norm_loss,
    soft_cross_entropy,
)


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def value_and_grad(fn, *arrays):
    """fn(*tensors) and its gradient with respect to every argument."""
    xs = [tf.Variable(np.asarray(a, np.float32)) for a in arrays]
    with tf.GradientTape() as tape:
        out = fn(*[tf.identity(x) for x in xs])  # tensors, as in a model
    grads = tape.gradient(out, xs)
    return float(out), [None if g is None else g.numpy() for g in grads]


# --- center loss ---------------------------------------------------------------------------------


def np_center_step(centers, x, labels, alpha):
    """Wen et al. eq. 4 with a Python loop over the classes of the batch."""
    loss = 0.5 * np.mean([np.sum((x[i] - centers[labels[i]]) ** 2) for i in range(len(x))])
    new = centers.copy()
    for j in set(labels.tolist()):
        members = [i for i in range(len(x)) if labels[i] == j]
        delta = sum(centers[j] - x[i] for i in members) / (1.0 + len(members))
        new[j] = centers[j] - alpha * delta
    return loss, new


def test_center_loss_two_steps_match_numpy_loop():
    rng = np.random.default_rng(0)
    layer = CenterLoss(num_classes=5, alpha=0.3)
    centers = np.zeros((5, 6), np.float32)
    for step in range(2):
        x = rng.normal(size=(7, 6)).astype(np.float32)
        labels = np.array([0, 2, 2, 4, 0, 2, 1]) if step == 0 else np.array([3, 3, 0, 2, 2, 2, 2])
        got = float(layer([x, labels], training=True))
        want, centers = np_center_step(centers, x, labels, 0.3)
        assert got == pytest.approx(want, rel=1e-5)
        np.testing.assert_allclose(layer.centers.numpy(), centers, rtol=1e-5, atol=1e-6)
    # class 3 first moves in step 2; no row stays at zero except none, and rows differ
    assert not np.allclose(centers[3], 0) and layer.centers.trainable is False


def test_center_loss_no_update_without_training_and_gradient_reaches_embeddings_only():
    rng = np.random.default_rng(1)
    layer = CenterLoss(num_classes=3, alpha=0.5)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([0, 1, 1, 2])
    layer([x, labels], training=True)
    before = layer.centers.numpy().copy()
    loss, (gx,) = value_and_grad(lambda e: layer([e, labels], training=False), x)
    np.testing.assert_array_equal(layer.centers.numpy(), before)
    c = before[labels]
    assert loss == pytest.approx(0.5 * np.mean(np.sum((x - c) ** 2, axis=1)), rel=1e-5)
    np.testing.assert_allclose(gx, (x - c) / len(x), rtol=1e-5, atol=1e-7)  # d/dx of 0.5 * mean ||x - c||^2
    assert layer.trainable_weights == []


@pytest.mark.parametrize("case", ["identical", "zero", "one_class"])
def test_center_loss_degenerate_inputs_are_finite(case):
    rng = np.random.default_rng(2)
    if case == "identical":
        x, labels = np.tile(rng.normal(size=(1, 4)), (6, 1)), np.array([0, 1, 2, 0, 1, 2])
    elif case == "zero":
        x, labels = np.zeros((6, 4)), np.array([0, 1, 2, 0, 1, 2])
    else:
        x, labels = rng.normal(size=(6, 4)), np.zeros(6, int)
    layer = CenterLoss(num_classes=3, alpha=0.5)
    for _ in range(2):
        loss, (gx,) = value_and_grad(lambda e: layer([e, labels], training=True), x)
        assert np.isfinite(loss) and np.isfinite(gx).all()
    assert np.isfinite(layer.centers.numpy()).all()
    if case == "zero":
        assert loss == 0.0 and not gx.any()


def test_center_loss_config_round_trip():
    layer = CenterLoss(num_classes=11, alpha=0.25, name="centers_x")
    config = layer.get_config()
    assert config["num_classes"] == 11 and config["alpha"] == 0.25
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is CenterLoss and again.get_config() == config
    with pytest.raises(ValueError):
        CenterLoss(num_classes=0)


# --- pre-logit norm ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_prelogit_norm_matches_numpy(p):
    x = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
    want = np.mean(np.sum((np.abs(x) + 1e-4) ** p, axis=1) ** (1.0 / p))
    assert float(prelogit_norm_loss(x, p=p)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("p", [1.0, 2.0])
def test_prelogit_norm_gradient_finite_at_zero(p):
    loss, (g,) = value_and_grad(lambda e: prelogit_norm_loss(e, p=p), np.zeros((3, 4)))
    assert np.isfinite(loss) and np.isfinite(g).all()
    assert loss == pytest.approx((4 * 1e-4 ** p) ** (1 / p), rel=1e-4)


# --- hard instance mining ------------------------------------------------------------------------


def np_hard_weights(losses, keep, rule, easy=0.1):
    n = len(losses)
    k = max(1, math.ceil(n * keep - 1e-6))
    order = np.argsort(-losses, kind="stable")  # hardest first, ties by position
    hard = np.zeros(n)
    hard[order[:k]] = 1.0
    if rule == "top_k":
        return hard * n / k
    w = hard + (1 - hard) * easy
    return w * n / w.sum()


@pytest.mark.parametrize("rule", ["top_k", "downweight"])
@pytest.mark.parametrize("n,keep", [(10, 0.3), (7, 0.5), (16, 1.0), (5, 0.01), (1, 0.5)])
def test_hard_instance_weights_match_numpy_sort(rule, n, keep):
    losses = np.random.default_rng(n).exponential(size=n).astype(np.float32)
    got = hard_instance_weights(losses, keep_fraction=keep, rule=rule).numpy()
    np.testing.assert_allclose(got, np_hard_weights(losses, keep, rule), rtol=1e-6)
    k = hard_instance_count(n, keep)
    if rule == "top_k":  # the weighted mean is the mean of the k largest losses
        assert np.mean(got * losses) == pytest.approx(np.sort(losses)[::-1][:k].mean(), rel=1e-5)
    assert np.mean(got) == pytest.approx(1.0, rel=1e-6)


def test_hard_instance_weights_ties_keep_exactly_k_and_no_gradient():
    losses = np.array([1.0, 3.0, 3.0, 3.0, 0.5, 3.0], np.float32)
    got = hard_instance_weights(losses, keep_fraction=0.5).numpy()
    np.testing.assert_array_equal(got, [0, 2, 2, 2, 0, 0])  # k = 3: the first three of the tied 3.0s
    _, (g,) = value_and_grad(lambda values: tf.reduce_sum(hard_instance_weights(values, 0.5) * values), losses)
    np.testing.assert_allclose(g, got)  # weights are constants: d/dl (w . l) = w
    with pytest.raises(ValueError):
        hard_instance_weights(losses, keep_fraction=0.0)
    with pytest.raises(ValueError):
        hard_instance_weights(losses, rule="softest")


# --- distillation --------------------------------------------------------------------------------


def test_distillation_terms_match_numpy():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(2, 6, 9)).astype(np.float32) * 3
    es, et = rng.normal(size=(2, 6, 16)).astype(np.float32)
    assert float(embedding_l2_loss(es, et)) == pytest.approx(np.mean(np.sum((es - et) ** 2, 1)), rel=1e-5)
    assert float(logit_mse_loss(s, t)) == pytest.approx(np.mean((s - t) ** 2), rel=1e-5)
    for temp in (1.0, 4.0):
        lp, lq = np_log_softmax(t / temp), np_log_softmax(s / temp)
        p = np.exp(lp)
        kl = temp ** 2 * np.mean(np.sum(p * (lp - lq), 1))
        ce = temp ** 2 * np.mean(-np.sum(p * lq, 1))
        assert float(soft_cross_entropy(s, t, temp)) == pytest.approx(kl, rel=1e-5)
        assert float(soft_cross_entropy(s, t, temp, kind="ce")) == pytest.approx(ce, rel=1e-5)
    hard = -np.mean(np_log_softmax(s)[np.arange(6), t.argmax(1)])
    assert float(hard_cross_entropy(s, t)) == pytest.approx(hard, rel=1e-5)


def test_soft_cross_entropy_t_squared_keeps_gradient_scale():
    """Hinton et al.: at high T the soft-target gradient is (s - t) / (N * C) once multiplied by T^2."""
    rng = np.random.default_rng(5)
    s, t = rng.normal(size=(2, 4, 5)).astype(np.float32) * 0.5
    s -= s.mean(1, keepdims=True)
    t -= t.mean(1, keepdims=True)
    _, (gs, _) = value_and_grad(lambda a, b: soft_cross_entropy(a, b, temperature=100.0), s, t)
    np.testing.assert_allclose(gs, (s - t) / (4 * 5), atol=2e-4)


@pytest.mark.parametrize("case", ["identical", "zero"])
def test_distillation_gradients_finite_on_degenerate_inputs(case):
    x = np.zeros((4, 6), np.float32) if case == "zero" else np.tile(np.arange(6.0, dtype=np.float32), (4, 1))
    fns = {
        "embedding_l2": lambda a, b: embedding_l2_loss(a, b),
        "soft_ce": lambda a, b: soft_cross_entropy(a, b, 2.0),
        "hard_ce": lambda a, b: hard_cross_entropy(a, b),
        "logit_mse": lambda a, b: logit_mse_loss(a, b),
    }
    for name, fn in fns.items():
        loss, (ga, gb) = value_and_grad(fn, x, x)
        assert np.isfinite(loss) and np.isfinite(ga).all(), name
        assert gb is None or not gb.any(), name  # the teacher side is a constant
        if name in ("embedding_l2", "soft_ce", "logit_mse"):
            assert loss == pytest.approx(0.0, abs=1e-6) and np.abs(ga).max() < 1e-6, name
