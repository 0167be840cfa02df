"""L2Pooling2D, LocalResponseNormalization, EuclideanDistance and StackDistances.

Values are checked against explicit NumPy loops (and LRN also against
``tf.nn.local_response_normalization``); gradients are taken with
``tf.GradientTape`` and must be finite where a square root meets zero.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.layers import EuclideanDistance, L2Pooling2D, LocalResponseNormalization, StackDistances

TOL = dict(rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- references
def _same_pad(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return out, total // 2  # TF puts the extra padding row/column at the end


def ref_l2_pool(x, k, s, padding, mode, eps=1e-12):
    """Plain loops over output positions and window elements (float64)."""
    b, h, w, c = x.shape
    if padding == "same":
        oh, top = _same_pad(h, k, s)
        ow, left = _same_pad(w, k, s)
    else:
        oh, ow, top, left = (h - k) // s + 1, (w - k) // s + 1, 0, 0
    out = np.zeros((b, oh, ow, c))
    for n in range(b):
        for i in range(oh):
            for j in range(ow):
                for ch in range(c):
                    total, count = 0.0, 0
                    for di in range(k):
                        for dj in range(k):
                            y, z = i * s - top + di, j * s - left + dj
                            if 0 <= y < h and 0 <= z < w:
                                total += float(x[n, y, z, ch]) ** 2
                                count += 1
                    if mode == "mean":
                        total /= count
                    out[n, i, j, ch] = math.sqrt(max(total, eps))
    return out


def ref_lrn(x, r, bias, alpha, beta):
    out = np.zeros(x.shape)
    c = x.shape[-1]
    for idx in np.ndindex(*x.shape[:-1]):
        for ch in range(c):
            s = sum(float(x[idx + (j,)]) ** 2 for j in range(max(0, ch - r), min(c, ch + r + 1)))
            out[idx + (ch,)] = x[idx + (ch,)] / (bias + alpha * s) ** beta
    return out


def _grad(layer, *inputs):
    ts = [tf.Variable(t) for t in inputs]
    with tf.GradientTape() as tape:
        y = layer(ts if len(ts) > 1 else ts[0])
        total = tf.reduce_sum(y)
    return y.numpy(), [g.numpy() for g in tape.gradient(total, ts)]


# ----------------------------------------------------------------------------- L2 pooling
@pytest.mark.parametrize("k,s,padding", [(3, 1, "same"), (3, 2, "same"), (3, 2, "valid"), (2, 2, "same")])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_l2_pooling_matches_loops(k, s, padding, mode):
    x = np.random.default_rng(k * 10 + s).standard_normal((2, 7, 6, 3)).astype("float32")
    layer = L2Pooling2D(k, strides=s, padding=padding, mode=mode)
    got = keras.ops.convert_to_numpy(layer(x))
    want = ref_l2_pool(x, k, s, padding, mode)
    assert got.shape == want.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(got, want, **TOL)


def test_l2_pooling_is_not_max_or_average():
    # one non-zero pixel: L2 (sum) pooling of the window is |v|, mean mode |v| / sqrt(count)
    x = np.zeros((1, 3, 3, 1), "float32")
    x[0, 1, 1, 0] = -2.0
    centre = keras.ops.convert_to_numpy(L2Pooling2D(3, padding="valid")(x))
    assert centre.shape == (1, 1, 1, 1) and centre[0, 0, 0, 0] == pytest.approx(2.0)
    rms = keras.ops.convert_to_numpy(L2Pooling2D(3, padding="valid", mode="mean")(x))
    assert rms[0, 0, 0, 0] == pytest.approx(2.0 / 3.0)


def test_l2_pooling_zero_window_has_finite_gradient():
    x = np.zeros((1, 5, 5, 2), "float32")
    x[0, 0, 0, 0] = 1.0  # one window with a value, most windows all zero (like ReLU outputs)
    y, (g,) = _grad(L2Pooling2D(3), x)
    assert np.isfinite(y).all() and np.isfinite(g).all()
    assert y[0, 4, 4, 1] == pytest.approx(1e-6)  # sqrt(epsilon)
    assert g[0, 0, 0, 0] > 0  # the non-zero pixel still gets its gradient
    # the naive sqrt(sum of squares) has NaN gradients there: what the epsilon prevents
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        naive = tf.reduce_sum(tf.sqrt(tf.nn.avg_pool2d(tf.square(xt), 3, 1, "SAME") * 9.0))
    assert not np.isfinite(tape.gradient(naive, xt).numpy()).all()


def test_l2_pooling_gradient_matches_finite_differences():
    x = np.random.default_rng(3).standard_normal((1, 4, 4, 2)).astype("float64")
    layer = L2Pooling2D(3, strides=1)
    _, (g,) = _grad(layer, x.astype("float32"))
    h, num = 1e-4, np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (ref_l2_pool(xp, 3, 1, "same", "sum").sum() - ref_l2_pool(xm, 3, 1, "same", "sum").sum()) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-3)


def test_l2_pooling_mixed_precision_output_dtype():
    layer = L2Pooling2D(3, dtype="mixed_float16")
    x = np.full((1, 4, 4, 2), 1e-4, "float32")  # squares underflow float16; float32 inside does not
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y).astype("float32")[0, 1, 1], 3e-4, rtol=1e-2)


# ----------------------------------------------------------------------------- LRN
def test_lrn_matches_tf_and_loops():
    x = np.random.default_rng(5).standard_normal((2, 3, 3, 9)).astype("float32") * 10
    layer = LocalResponseNormalization(depth_radius=2, bias=1.0, alpha=2e-3, beta=0.75)
    got = keras.ops.convert_to_numpy(layer(x))
    tf_ref = tf.nn.local_response_normalization(x, depth_radius=2, bias=1.0, alpha=2e-3, beta=0.75).numpy()
    np.testing.assert_allclose(got, tf_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ref_lrn(x, 2, 1.0, 2e-3, 0.75), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- distances
def ref_distance(a, b, squared, eps=1e-12):
    out = np.zeros((a.shape[0], 1))
    for i in range(a.shape[0]):
        s = sum((float(a[i, k]) - float(b[i, k])) ** 2 for k in range(a.shape[1]))
        out[i, 0] = s if squared else math.sqrt(max(s, eps))
    return out


@pytest.mark.parametrize("squared", [False, True])
def test_distance_values_and_shape(squared):
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((5, 16)).astype("float32"), rng.standard_normal((5, 16)).astype("float32")
    layer = EuclideanDistance(squared=squared)
    got = keras.ops.convert_to_numpy(layer([a, b]))
    assert got.shape == (5, 1)
    np.testing.assert_allclose(got, ref_distance(a, b, squared), rtol=1e-5)
    ia, ib = keras.Input((16,)), keras.Input((16,))
    assert tuple(layer([ia, ib]).shape) == (None, 1)


@pytest.mark.parametrize("squared", [False, True])
def test_distance_gradient_finite_for_identical_embeddings(squared):
    a = np.random.default_rng(8).standard_normal((4, 8)).astype("float32")
    b = a.copy()
    b[3] += 0.5  # one row differs: its gradient must still flow
    y, (ga, gb) = _grad(EuclideanDistance(squared=squared), a, b)
    assert np.isfinite(ga).all() and np.isfinite(gb).all()
    np.testing.assert_allclose(y[:3, 0], 0.0 if squared else 1e-6, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(ga[:3], 0.0)
    want = 2 * (a[3] - b[3]) if squared else (a[3] - b[3]) / np.linalg.norm(a[3] - b[3])
    np.testing.assert_allclose(ga[3], want, rtol=1e-5)
    np.testing.assert_allclose(gb[3], -want, rtol=1e-5)


def test_naive_distance_gradient_is_nan_for_identical_embeddings():
    # What the epsilon protects against (the monograph's first Lambda layer).
    a = tf.Variable(np.ones((2, 4), "float32"))
    with tf.GradientTape() as tape:
        d = tf.reduce_sum(tf.sqrt(tf.reduce_sum(tf.square(a - tf.ones((2, 4))), axis=-1)))
    assert np.isnan(tape.gradient(d, a).numpy()).all()


def test_distance_and_stack_are_float32_under_mixed_precision():
    a16 = keras.ops.cast(np.ones((2, 4)), "float16")
    d = EuclideanDistance()([a16, a16 * 0.5])
    assert keras.backend.standardize_dtype(d.dtype) == "float32"
    s = StackDistances()([d, d])
    assert keras.backend.standardize_dtype(s.dtype) == "float32"


def test_stack_shape_and_order():
    pos = np.array([[1.0], [2.0], [3.0]], "float32")
    neg = np.array([[4.0], [5.0], [6.0]], "float32")
    got = keras.ops.convert_to_numpy(StackDistances()([pos, neg]))
    assert got.shape == (3, 2, 1)
    np.testing.assert_array_equal(got[:, 0, 0], [1, 2, 3])
    np.testing.assert_array_equal(got[:, 1, 0], [4, 5, 6])
    p, n = keras.Input((1,)), keras.Input((1,))
    assert tuple(StackDistances()([p, n]).shape) == (None, 2, 1)


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("layer", [
    L2Pooling2D(2, strides=2, padding="valid", mode="mean", epsilon=1e-8, name="p"),
    LocalResponseNormalization(depth_radius=3, bias=2.0, alpha=1e-3, beta=0.5, name="n"),
    EuclideanDistance(squared=True, epsilon=1e-9, name="pos_dist"),
    StackDistances(name="distances"),
], ids=lambda layer: type(layer).__name__)
def test_config_round_trip_by_registered_name(layer):
    blob = keras.saving.serialize_keras_object(layer)
    assert blob["registered_name"] == f"kerasface>{type(layer).__name__}"
    clone = keras.saving.deserialize_keras_object(blob)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        L2Pooling2D(mode="max")
    with pytest.raises(ValueError, match="padding"):
        L2Pooling2D(padding="full")
