"""FusedPReLU: PReLU as one fused kernel forward and one backward on TensorFlow, Keras's PReLU otherwise.

Checked against an independent NumPy reference (output, d/d input, d/d alpha summed over the batch and
the shared axes) and against ``keras.layers.PReLU`` with the same alpha, with and without shared axes,
on degenerate inputs (all zeros, huge values), in bfloat16, and through a ``.keras`` save / load.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.layers import FusedPReLU


def _numpy_prelu(x, alpha, upstream, reduce_axes):
    x = x.astype(np.float64)
    a = alpha.astype(np.float64)[None]
    y = np.where(x > 0, x, a * x)
    dx = np.where(x > 0, upstream, a * upstream)
    da = np.where(x > 0, 0.0, upstream * x).sum(axis=reduce_axes, keepdims=True)[0]
    return y, dx, da


def _grads(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * upstream)
    dx, da = tape.gradient(loss, [x, layer.alpha])
    return y.numpy(), dx.numpy(), da.numpy()


@pytest.mark.parametrize("shape, shared_axes", [((4, 5, 6, 3), [1, 2]), ((4, 5, 6, 3), None), ((7, 9), None)])
def test_matches_numpy_and_keras(shape, shared_axes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    upstream = rng.normal(size=shape).astype("float32")
    fused = FusedPReLU(shared_axes=shared_axes)
    plain = keras.layers.PReLU(shared_axes=shared_axes)
    fused.build(shape)
    plain.build(shape)
    alpha = rng.uniform(-0.5, 1.5, size=fused.alpha.shape).astype("float32")  # any sign, not only 0.25
    fused.alpha.assign(alpha)
    plain.alpha.assign(alpha)
    reduce_axes = (0,) + tuple(i for i in range(1, len(shape)) if fused.alpha.shape[i - 1] == 1)
    want_y, want_dx, want_da = _numpy_prelu(x, alpha, upstream, reduce_axes)
    got = _grads(fused, x, upstream)
    keras_got = _grads(plain, x, upstream)
    for g, k, w in zip(got, keras_got, (want_y, want_dx, want_da)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(g, k, rtol=1e-5, atol=1e-4)


def test_degenerate_inputs_have_finite_gradients_and_zero_follows_pytorch():
    layer = FusedPReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25))
    for x in (np.zeros((2, 3, 3, 4), "float32"), np.full((2, 3, 3, 4), -3e38, "float32")):
        y, dx, da = _grads(layer, x, np.ones_like(x))
        assert np.isfinite(y).all() and np.isfinite(dx).all()
        assert not np.isnan(da).any()
    y, dx, da = _grads(layer, np.zeros((2, 3, 3, 4), "float32"), np.ones((2, 3, 3, 4), "float32"))
    np.testing.assert_array_equal(dx, 0.25)  # alpha * upstream at x == 0 (Keras's relu form gives 0 there)
    np.testing.assert_array_equal(da, 0.0)


def test_bfloat16_policy_runs_in_bfloat16():
    layer = FusedPReLU(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25), dtype="mixed_bfloat16")
    x = np.linspace(-2, 2, 2 * 3 * 3 * 4, dtype="float32").reshape(2, 3, 3, 4)
    y = layer(x)
    assert y.dtype == "bfloat16"
    np.testing.assert_allclose(np.asarray(tf.cast(y, tf.float32)), np.where(x > 0, x, 0.25 * x), rtol=1e-2, atol=1e-2)


def test_saves_and_loads_and_reads_keras_prelu_weights(tmp_path):
    from kerasface.layers import load_weights

    def net(act):
        inp = keras.Input((4, 4, 3))
        x = keras.layers.Conv2D(5, 3, padding="same")(inp)
        return keras.Model(inp, act(shared_axes=[1, 2], name="act")(x))

    rng = np.random.default_rng(2)
    model = net(FusedPReLU)
    model.get_layer("act").alpha.assign(rng.normal(size=(1, 1, 5)).astype("float32"))
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")  # safe mode
    assert type(loaded.get_layer("act")) is FusedPReLU
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-6)
    old = net(keras.layers.PReLU)  # weights written before the builders used the fused layer
    old.set_weights(model.get_weights())
    old.save_weights(str(tmp_path / "old.weights.h5"))
    new = net(FusedPReLU)
    load_weights(new, tmp_path / "old.weights.h5")
    np.testing.assert_allclose(new(x).numpy(), old(x).numpy(), rtol=1e-6)
