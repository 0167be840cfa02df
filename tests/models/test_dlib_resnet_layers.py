"""The two layers of dlib's ResNet that Keras lacks, against NumPy: ZeroPadAdd (dlib's add_prev) and ChannelAffine."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.models.dlib_resnet import ChannelAffine, ZeroPadAdd


def _reference_add(a, b):
    """dlib's tt::add with mismatched shapes, element by element: missing elements are zero."""
    shape = tuple(max(x, y) for x, y in zip(a.shape, b.shape))
    out = np.zeros(shape, np.float32)
    for idx in np.ndindex(shape):
        va = a[idx] if all(i < s for i, s in zip(idx, a.shape)) else 0.0
        vb = b[idx] if all(i < s for i, s in zip(idx, b.shape)) else 0.0
        out[idx] = va + vb
    return out


@pytest.mark.parametrize("sa,sb", [((2, 3, 3, 4), (2, 4, 4, 2)),   # level1/level0: smaller map, more channels
                                    ((1, 5, 5, 3), (1, 5, 5, 3)),   # identity shortcut
                                    ((1, 2, 1, 6), (1, 1, 2, 6))])  # each larger in one dimension
def test_zero_pad_add_matches_dlibs_elementwise_rule(sa, sb):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=sa).astype(np.float32), rng.normal(size=sb).astype(np.float32)
    layer = ZeroPadAdd()
    got = keras.ops.convert_to_numpy(layer([a, b]))
    np.testing.assert_allclose(got, _reference_add(a, b), atol=1e-6)
    assert tuple(layer.compute_output_shape([sa, sb])) == got.shape


def test_zero_pad_add_gradients_are_finite_and_route_to_the_present_elements():
    a = tf.Variable(np.zeros((1, 3, 3, 4), np.float32))  # degenerate: all zeros
    b = tf.Variable(np.zeros((1, 4, 4, 2), np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(ZeroPadAdd()([a, b]) * 2.0)
    ga, gb = tape.gradient(y, [a, b])
    assert np.isfinite(ga.numpy()).all() and np.isfinite(gb.numpy()).all()
    np.testing.assert_array_equal(ga.numpy(), 2.0)
    np.testing.assert_array_equal(gb.numpy(), 2.0)


def test_zero_pad_add_refuses_unknown_spatial_sizes():
    with pytest.raises(ValueError, match="must be static"):
        ZeroPadAdd()([keras.Input((None, None, 4)), keras.Input((3, 3, 4))])


def test_channel_affine_against_numpy_and_config_round_trip():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    layer = ChannelAffine(name="aff")
    layer.build(x.shape)
    gamma, beta = np.array([0.5, -2.0, 0.0], np.float32), np.array([1.0, 0.0, -3.0], np.float32)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x * gamma + beta, atol=1e-6)
    clone = ChannelAffine.from_config(json.loads(json.dumps(layer.get_config())))
    assert clone.name == "aff"
    ser = keras.saving.serialize_keras_object(layer)
    assert ser["registered_name"] == "kerasface>ChannelAffine"
