"""FusedBatchNormalization: TensorFlow's fused kernel in training, Keras's BatchNormalization otherwise.

Checked against an independent NumPy reference (batch statistics, normalisation, the analytic
gradients of a batch norm and the moving averages) and against ``keras.layers.BatchNormalization``
with the same weights, including a constant channel (variance 0), an epsilon below the
1.001e-5 that ``tf.nn.fused_batch_norm`` would silently impose, and no ``gamma`` / ``beta``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.layers import FusedBatchNormalization


def _numpy_bn(x, gamma, beta, eps, upstream):
    """Training-mode batch norm over (N, H, W) and its gradients, written out in float64."""
    x = x.astype(np.float64)
    axes = (0, 1, 2)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean = x.mean(axis=axes)
    var = ((x - mean) ** 2).mean(axis=axes)  # biased
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    y = gamma * xhat + beta
    dy = upstream.astype(np.float64)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dxhat = dy * gamma
    dx = inv / n * (n * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))
    return y, mean, var, dx, dgamma, dbeta


def _inputs(seed=0, shape=(6, 5, 4, 7)):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    x[..., 0] = 1.5  # a constant channel: variance 0
    upstream = rng.normal(size=shape).astype("float32")
    gamma = rng.normal(1.0, 0.3, shape[-1]).astype("float32")
    beta = rng.normal(0.0, 0.5, shape[-1]).astype("float32")
    return x, upstream, gamma, beta


def _train_step(layer, x, upstream):
    xv = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(xv, training=True)
        loss = tf.reduce_sum(tf.cast(y, "float32") * upstream)
    grads = tape.gradient(loss, [xv] + layer.trainable_weights)
    return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize("eps", [1e-3, 1e-5])
def test_training_step_matches_numpy_and_keras(eps):
    x, upstream, gamma, beta = _inputs()
    fused = FusedBatchNormalization(momentum=0.9, epsilon=eps)
    plain = keras.layers.BatchNormalization(momentum=0.9, epsilon=eps)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        layer.moving_mean.assign(np.full(7, 0.5, "float32"))
        layer.moving_variance.assign(np.full(7, 2.0, "float32"))
    assert fused._fused(tf.constant(x), True, None), "the fused kernel must be the path under test"

    y, (dx, dgamma, dbeta) = _train_step(fused, x, upstream)
    y_ref, mean, var, dx_ref, dgamma_ref, dbeta_ref = _numpy_bn(x, gamma, beta, eps, upstream)
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=1e-5, atol=1e-4)
    # moving statistics: Keras's rule with the biased batch variance
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.9 * 0.5 + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 * 2.0 + 0.1 * var, rtol=1e-5, atol=1e-6)
    assert fused.moving_variance.numpy()[0] == pytest.approx(1.8)  # the constant channel

    y_k, (dx_k, dgamma_k, dbeta_k) = _train_step(plain, x, upstream)
    np.testing.assert_allclose(y, y_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_k, rtol=1e-4, atol=1e-4)
    # channel 0 is constant: Keras's float32 mean of it is off by a rounding step, which 1/sqrt(eps) turns
    # into a gamma gradient of about 1e-3 (the NumPy reference above and the fused kernel give 0)
    np.testing.assert_allclose(dgamma[1:], dgamma_k[1:], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-6, atol=1e-7)
    assert all(np.isfinite(g).all() for g in (dx, dgamma, dbeta))


def test_without_gamma_and_beta_and_in_inference():
    x, upstream, _, _ = _inputs(1)
    fused = FusedBatchNormalization(center=False, scale=False)
    plain = keras.layers.BatchNormalization(center=False, scale=False)
    y, (dx,) = _train_step(fused, x, upstream)
    y_k, (dx_k,) = _train_step(plain, x, upstream)
    np.testing.assert_allclose(y, y_k, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx_k, rtol=1e-4, atol=1e-4)
    # inference: the moving statistics (fused kernel with is_training=False), as the parent computes them
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_a_collapsed_batch_has_finite_gradients():
    x = np.ones((2, 3, 3, 4), "float32")  # every channel constant
    layer = FusedBatchNormalization()
    _, grads = _train_step(layer, x, np.ones_like(x))
    assert all(np.isfinite(g).all() for g in grads)


def test_other_ranks_use_keras_path():
    layer = FusedBatchNormalization()
    x2 = tf.constant(np.random.default_rng(2).normal(size=(8, 5)).astype("float32"))
    layer.build(x2.shape)
    assert not layer._fused(x2, True, None) and not layer._fusable(x2, None)
    np.testing.assert_allclose(layer(x2, training=True).numpy(),
                               keras.layers.BatchNormalization()(x2, training=True).numpy(), rtol=1e-5, atol=1e-5)


def test_inference_and_a_frozen_layer_match_numpy_with_gradients():
    """training=False, and a frozen layer inside a training step: y = gamma (x - mean) / sqrt(var + eps) + beta
    with the moving statistics, d/dx = gamma / sqrt(var + eps) * upstream; nothing moves."""
    x, upstream, _, _ = _inputs(4)
    rng = np.random.default_rng(5)
    c = x.shape[-1]
    gamma, beta = rng.normal(size=c).astype("float32"), rng.normal(size=c).astype("float32")
    mean, var = rng.normal(size=c).astype("float32"), rng.uniform(0.0, 2.0, size=c).astype("float32")
    var[0] = 0.0  # a channel whose moving variance is 0: epsilon alone
    want_y = gamma * (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-3) + beta
    want_dx = gamma / np.sqrt(var.astype(np.float64) + 1e-3) * upstream
    for frozen in (False, True):
        layer = FusedBatchNormalization()
        layer.build(x.shape)
        for w, v in zip((layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance), (gamma, beta, mean, var)):
            w.assign(v)
        layer.trainable = not frozen
        assert layer._fusable(tf.constant(x), None)
        assert layer._fused(tf.constant(x), True, None) is (not frozen)  # a frozen layer never takes the training path
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=frozen)  # frozen: training=True in a fit, the layer still infers
        dx = tape.gradient(y, xt, output_gradients=tf.constant(upstream))
        np.testing.assert_allclose(y.numpy(), want_y, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(dx.numpy(), want_dx, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)


def test_mixed_bfloat16_computes_in_float32():
    x, upstream, _, _ = _inputs(3)
    fused = FusedBatchNormalization(dtype="mixed_bfloat16")
    plain = keras.layers.BatchNormalization(dtype="mixed_bfloat16")
    y, _ = _train_step(fused, x, upstream)
    y_k, _ = _train_step(plain, x, upstream)
    assert str(fused.compute_dtype) == "bfloat16"
    np.testing.assert_allclose(y.astype("float32"), y_k.astype("float32"), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-6)


def test_saves_and_loads_with_the_parents_config(tmp_path):
    inputs = keras.Input((4, 4, 3))
    outputs = FusedBatchNormalization(momentum=0.8, epsilon=1e-4, name="bn")(keras.layers.Conv2D(5, 3)(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(4).normal(size=(3, 4, 4, 3)).astype("float32")
    model(x, training=True)  # moving statistics away from their initial values
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    assert loaded.get_layer("bn").get_config() == model.get_layer("bn").get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def _two_bn_net(bn_class):
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = bn_class(name="bn1")(x)
    x = keras.layers.Conv2D(5, 1, name="pw")(x)
    x = bn_class(name="bn2")(x)
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))


def test_weights_saved_with_keras_batch_norm_load_into_fused(tmp_path):
    """A run backup written before the builders used the fused layer: Keras addresses weights by class name,
    so the plain load fails; kerasface.layers.load_weights reads it, and the classes are put back afterwards."""
    from kerasface.layers import load_weights

    old = _two_bn_net(keras.layers.BatchNormalization)
    rng = np.random.default_rng(3)
    for w in old.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") ** 2 + 0.1)
    path = tmp_path / "old.weights.h5"
    old.save_weights(str(path))
    new = _two_bn_net(FusedBatchNormalization)
    with pytest.raises(ValueError, match="could not be loaded"):
        new.load_weights(str(path))
    load_weights(new, path)
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert [type(new.get_layer(n)) for n in ("bn1", "bn2")] == [FusedBatchNormalization] * 2
    x = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_allclose(new(x, training=False).numpy(), old(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    # a file of the fused model itself loads directly, and a file of another network still fails
    own = tmp_path / "own.weights.h5"
    new.save_weights(str(own))
    load_weights(_two_bn_net(FusedBatchNormalization), own)
    other = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(2, 1)])
    with pytest.raises(ValueError):
        load_weights(other, path)
