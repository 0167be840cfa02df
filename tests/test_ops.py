"""kerasface.ops: the face normalisation and L2 normalisation every module shares."""

import numpy as np
import pytest
import tensorflow as tf

from kerasface.ops import l2_normalize, normalize_faces


def test_normalize_faces_matches_the_formula_for_numpy_and_tensors():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    want = (x.astype(np.float64) - 127.5) / 128.0
    got_np = normalize_faces(x)
    assert got_np.dtype == np.float32
    np.testing.assert_allclose(got_np, want, atol=1e-7)
    got_tf = normalize_faces(tf.constant(x))
    np.testing.assert_allclose(np.asarray(got_tf), want, atol=1e-7)
    assert got_np.min() == pytest.approx(-127.5 / 128) and got_np.max() == pytest.approx(127.5 / 128)


def test_l2_normalize_matches_a_numpy_reference_and_keeps_zero_rows_finite():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    x[2] = 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    want = np.where(norms > 0, x / np.where(norms > 0, norms, 1), 0)
    np.testing.assert_allclose(l2_normalize(x), want, atol=1e-6)
    np.testing.assert_allclose(np.asarray(l2_normalize(tf.constant(x))), want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(l2_normalize(x)[[0, 1, 3, 4]], axis=1), 1.0, atol=1e-6)


def test_l2_normalize_gradient_is_finite_at_zero():
    x = tf.Variable(np.zeros((2, 4), np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(l2_normalize(x))
    g = tape.gradient(y, x)
    assert np.all(np.isfinite(g.numpy()))
