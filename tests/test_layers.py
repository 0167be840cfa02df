"""GroupConv2D (every kernel path), AbsoluteDifference and L2Normalize.

Every grouped-conv path must compute exactly what ``keras.layers.Conv2D(groups=G)``
computes with the same kernel, forward and backward; one small configuration is
also checked against an explicit NumPy loop so the check is not Keras vs Keras only.
"""

from __future__ import annotations

import functools
import json
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.config import GROUP_CONV_PATHS
from kerasface.layers import (
    GROUP_CONV_IMPLEMENTATIONS,
    AbsoluteDifference,
    GroupConv2D,
    L2Normalize,
    cpu_has_avx512,
    group_conv_block_groups,
    resolve_group_conv_implementation,
)

PATHS = ("native", "depthwise", "split", "blockdiag", "matmul", "auto")
TOL = dict(rtol=1e-4, atol=1e-4)

# (id, groups, in_channels, filters, kernel, strides, padding, H, W)
_CONFIGS = {
    "g2-f1-k3-s1-same": (2, 16, 16, 3, 1, "same", 7, 7),
    "g2-f2-k3-s2-same-even": (2, 16, 32, 3, 2, "same", 8, 8),  # asymmetric TF padding
    "g5-f2-k3-s2-valid": (5, 40, 80, 3, 2, "valid", 9, 9),
    "g5-f1-k3-s1-valid": (5, 40, 40, 3, 1, "valid", 6, 6),
    "g5-f2-k4-whole-map": (5, 40, 80, 4, 1, "valid", 4, 4),
    "g40-f2-k3-s2-same": (40, 320, 640, 3, 2, "same", 5, 5),
    "g40-f1-k4-whole-map": (40, 320, 320, 4, 1, "valid", 4, 4),  # like the embedding gconv
    "g2-f2-k4x2-whole-map": (2, 16, 32, (4, 2), 1, "valid", 4, 2),  # non-square input
    "g8-cpg1-f2-k3-s1-same": (8, 8, 16, 3, 1, "same", 5, 5),  # one input channel per group
}


@functools.cache
def _case(cfg_id):
    """Inputs, kernel, upstream gradient and the Conv2D(groups=G) reference results."""
    groups, cin, filters, kernel, strides, padding, h, w = _CONFIGS[cfg_id]
    rng = np.random.default_rng(zlib.crc32(cfg_id.encode()))
    ref = keras.layers.Conv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                              use_bias=False)
    ref.build((None, h, w, cin))
    k = (rng.standard_normal(tuple(ref.kernel.shape)) * 0.1).astype("float32")
    ref.kernel.assign(k)
    x = rng.standard_normal((2, h, w, cin)).astype("float32")
    up = rng.standard_normal(ref.compute_output_shape(x.shape)).astype("float32")
    out, gx, gk = _forward_backward(ref, x, up)
    return x, k, up, out, gx, gk


def _forward_backward(layer, x, up):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        y = layer(xt)
        loss = tf.reduce_sum(y * up)
    gx, gk = tape.gradient(loss, [xt, layer.kernel.value])
    return y.numpy(), gx.numpy(), gk.numpy()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("cfg_id", list(_CONFIGS))
def test_group_conv_matches_keras_conv2d(cfg_id, path):
    groups, cin, filters, kernel, strides, padding, h, w = _CONFIGS[cfg_id]
    x, k, up, ref_out, ref_gx, ref_gk = _case(cfg_id)
    layer = GroupConv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                        implementation=path)
    layer.build((None, h, w, cin))
    assert tuple(layer.kernel.shape) == k.shape  # the Conv2D(groups=G) kernel layout
    layer.kernel.assign(k)
    out, gx, gk = _forward_backward(layer, x, up)
    assert out.shape == ref_out.shape
    assert tuple(layer.compute_output_shape((2, h, w, cin))) == out.shape
    np.testing.assert_allclose(out, ref_out, **TOL, err_msg=f"{path}: forward")
    np.testing.assert_allclose(gx, ref_gx, **TOL, err_msg=f"{path}: d/d input")
    np.testing.assert_allclose(gk, ref_gk, **TOL, err_msg=f"{path}: d/d kernel")


@pytest.mark.parametrize("cfg_id", ["g5-f2-k3-s2-valid", "g2-f2-k3-s2-same-even", "g40-f2-k3-s2-same",
                                    "g8-cpg1-f2-k3-s1-same", "g40-f1-k4-whole-map"])
def test_every_block_size_matches_keras_conv2d(cfg_id):
    """``"blockdiag"`` with every divisor of G as the block (1 = split, G = one dense conv)."""
    groups, cin, filters, kernel, strides, padding, h, w = _CONFIGS[cfg_id]
    x, k, up, ref_out, ref_gx, ref_gk = _case(cfg_id)
    sizes = [b for b in range(1, groups + 1) if groups % b == 0]
    assert len(sizes) >= 2
    for b in sizes:
        layer = GroupConv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                            implementation="blockdiag", block_groups=b)
        layer.build((None, h, w, cin))
        layer.kernel.assign(k)
        out, gx, gk = _forward_backward(layer, x, up)
        np.testing.assert_allclose(out, ref_out, **TOL, err_msg=f"block {b}: forward")
        np.testing.assert_allclose(gx, ref_gx, **TOL, err_msg=f"block {b}: d/d input")
        np.testing.assert_allclose(gk, ref_gk, **TOL, err_msg=f"block {b}: d/d kernel")


def _numpy_group_conv(x, k, groups, strides, padding):
    """Explicit-loop grouped convolution with TensorFlow's 'same' padding convention."""
    b, h, w, cin = x.shape
    kh, kw, cpg, filters = k.shape
    assert cpg * groups == cin
    m = filters // groups
    sh, sw = strides
    if padding == "same":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0)
        pw = max((ow - 1) * sw + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.zeros((b, oh, ow, filters), np.float64)
    for g in range(groups):
        for o in range(g * m, (g + 1) * m):
            for i in range(oh):
                for j in range(ow):
                    acc = np.zeros(b)
                    for di in range(kh):
                        for dj in range(kw):
                            for c in range(cpg):
                                acc += x[:, i * sh + di, j * sw + dj, g * cpg + c] * k[di, dj, c, o]
                    out[:, i, j, o] = acc
    return out


@pytest.mark.parametrize(
    "groups,cin,filters,kernel,strides,padding,h,w",
    [
        (2, 4, 6, 3, (2, 2), "same", 6, 5),
        (3, 6, 3, (3, 2), (1, 2), "valid", 5, 6),
    ],
)
def test_group_conv_matches_numpy_loops(groups, cin, filters, kernel, strides, padding, h, w):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, h, w, cin)).astype("float32")
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    k = rng.standard_normal((kh, kw, cin // groups, filters)).astype("float32")
    want = _numpy_group_conv(x.astype(np.float64), k.astype(np.float64), groups, strides, padding)
    assert want.shape[1] * want.shape[2] > 1 and np.abs(want).max() > 0.5
    for path in PATHS:
        layer = GroupConv2D(filters, kernel, strides=strides, padding=padding, groups=groups,
                            implementation=path)
        layer.build((None, h, w, cin))
        layer.kernel.assign(k)
        got = keras.ops.convert_to_numpy(layer(x))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=path)


def test_group_conv_bias_is_added():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 5, 5, 8)).astype("float32")
    plain = GroupConv2D(8, 3, groups=2, implementation="split")
    biased = GroupConv2D(8, 3, groups=2, use_bias=True, implementation="depthwise")
    plain.build(x.shape)
    biased.build(x.shape)
    bias = rng.standard_normal(8).astype("float32")
    biased.set_weights([plain.get_weights()[0], bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(biased(x)),
                               keras.ops.convert_to_numpy(plain(x)) + bias, rtol=1e-5, atol=1e-5)


def _gpu_visible() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF-specific choice")
def test_auto_resolution_on_cpu():
    if _gpu_visible():
        pytest.skip("auto picks native when a GPU is visible")
    assert resolve_group_conv_implementation("auto", 2) == "blockdiag"
    assert resolve_group_conv_implementation("auto", 128) == "blockdiag"
    # a valid kernel covering the whole map (VarGFaceNet's embedding conv): one batched matmul
    whole = dict(input_shape=(None, 7, 7, 1024), kernel_size=7, padding="valid")
    assert resolve_group_conv_implementation("auto", 128, **whole) == "matmul"
    assert resolve_group_conv_implementation("auto", 128, **{**whole, "padding": "same"}) == "blockdiag"
    assert resolve_group_conv_implementation("auto", 128, **{**whole, "input_shape": (None, 8, 7, 1024)}) \
        == "blockdiag"
    for path in GROUP_CONV_IMPLEMENTATIONS[1:]:
        assert resolve_group_conv_implementation(path, 128) == path
        assert resolve_group_conv_implementation(path, 2, **whole) == path
    layer = GroupConv2D(1024, 7, padding="valid", groups=128)
    layer(np.zeros((1, 7, 7, 1024), "float32"))  # runs the matmul path


def test_block_size_rule():
    """VarGFaceNet's convs (8 inputs per group) get the measured block sizes per CPU kind; always a divisor."""
    wide = {"avx512": True}
    assert group_conv_block_groups(5, 8, 56 * 56, **wide) == 5  # head: one dense 40->40 conv
    assert group_conv_block_groups(10, 8, 28 * 28, **wide) == 2  # 16 input channels per block
    assert group_conv_block_groups(20, 8, 14 * 14, **wide) == 2
    assert group_conv_block_groups(40, 8, 7 * 7, **wide) == 8  # 64 input channels per block
    assert group_conv_block_groups(128, 8, 1, **wide) == 8
    assert group_conv_block_groups(7, 8, 28 * 28, **wide) == 1  # no divisor fits: split
    narrow = {"avx512": False}  # AVX2: wasted MACs cost twice as much
    assert group_conv_block_groups(5, 8, 56 * 56, **narrow) == 1  # the head splits
    assert group_conv_block_groups(10, 8, 28 * 28, **narrow) == 1
    assert group_conv_block_groups(20, 8, 14 * 14, **narrow) == 1
    assert group_conv_block_groups(20, 8, 7 * 7, **narrow) == 2  # 16 input channels per block
    assert group_conv_block_groups(40, 8, 7 * 7, **narrow) == 2
    assert group_conv_block_groups(10, 4, None, **narrow) == 2  # unknown map size: the large-map width
    for g in (1, 2, 3, 5, 6, 10, 12, 20, 40, 128):
        for cpg in (1, 4, 8, 16):
            for area in (None, 1, 49, 196, 3136):
                for avx512 in (True, False, None):
                    assert g % group_conv_block_groups(g, cpg, area, avx512=avx512) == 0


def test_cpu_kind_is_read_from_cpuinfo():
    flags = next((line.split() for line in open("/proc/cpuinfo") if line.startswith("flags")), None)
    assert cpu_has_avx512() == ("avx512f" in flags if flags is not None else True)
    # the layer's own choice follows the machine's rule
    layer = GroupConv2D(160, 3, groups=20)
    layer.build((None, 14, 14, 160))
    assert layer.block_size((None, 14, 14, 160)) == group_conv_block_groups(20, 8, 196, avx512=cpu_has_avx512())


def test_config_lists_every_path():
    assert GROUP_CONV_PATHS == GROUP_CONV_IMPLEMENTATIONS


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="not divisible by groups"):
        GroupConv2D(10, 3, groups=4)
    with pytest.raises(ValueError, match="implementation"):
        GroupConv2D(8, 3, groups=2, implementation="fast")
    with pytest.raises(ValueError, match="implementation"):
        resolve_group_conv_implementation("cudnn", 2)
    with pytest.raises(ValueError, match="block_groups"):
        GroupConv2D(8, 3, groups=4, block_groups=3)
    with pytest.raises(ValueError, match="block_groups"):
        GroupConv2D(8, 3, groups=4, block_groups=0)
    with pytest.raises(ValueError, match="padding"):
        GroupConv2D(8, 3, groups=2, padding="causal")
    layer = GroupConv2D(8, 3, groups=4)
    with pytest.raises(ValueError, match="not divisible"):
        layer(np.zeros((1, 6, 6, 6), "float32"))  # 6 input channels, 4 groups
    with pytest.raises(ValueError):
        GroupConv2D(8, 3, groups=4)(keras.Input((6, 6, 10)))


def test_group_conv_get_config_round_trip():
    rng = np.random.default_rng(3)
    layer = GroupConv2D(12, (3, 2), strides=(2, 1), padding="valid", groups=3, use_bias=True,
                        implementation="blockdiag", block_groups=3,
                        kernel_regularizer=keras.regularizers.L2(1e-3), name="gconv_rt")
    x = rng.standard_normal((2, 7, 6, 9)).astype("float32")
    layer.build(x.shape)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    config = layer.get_config()
    json.dumps(config)  # JSON-serialisable (it goes into model.keras)
    clone = GroupConv2D.from_config(json.loads(json.dumps(config)))
    for attr in ("filters", "kernel_size", "strides", "padding", "groups", "use_bias", "implementation",
                 "block_groups"):
        assert getattr(clone, attr) == getattr(layer, attr), attr
    assert isinstance(clone.kernel_regularizer, keras.regularizers.L2)
    assert clone.kernel_regularizer.l2 == pytest.approx(1e-3)
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)),
                               keras.ops.convert_to_numpy(layer(x)), rtol=1e-6, atol=1e-6)
    assert clone.get_config() == config
    # Registered under the package: generic (de)serialisation finds the class.
    ser = keras.saving.serialize_keras_object(layer)
    assert ser["registered_name"] == "kerasface>GroupConv2D"
    assert type(keras.saving.deserialize_keras_object(ser)) is GroupConv2D


def test_absolute_difference_matches_numpy():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((3, 10)).astype("float32")
    b = rng.standard_normal((3, 10)).astype("float32")
    layer = AbsoluteDifference()
    got = keras.ops.convert_to_numpy(layer([a, b]))
    np.testing.assert_allclose(got, np.abs(a - b), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(layer([b, a])))
    assert (got >= 0).all()
    assert tuple(layer.compute_output_shape([(None, 10), (None, 10)])) == (None, 10)


def test_l2_normalize_matches_numpy():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 7)).astype("float32") * 3
    got = keras.ops.convert_to_numpy(L2Normalize()(x))
    np.testing.assert_allclose(got, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, rtol=1e-5)
    y = rng.standard_normal((2, 5, 3)).astype("float32")
    got1 = keras.ops.convert_to_numpy(L2Normalize(axis=1)(y))
    np.testing.assert_allclose(got1, y / np.linalg.norm(y, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    clone = L2Normalize.from_config(L2Normalize(axis=1, epsilon=1e-6).get_config())
    assert clone.axis == 1 and clone.epsilon == pytest.approx(1e-6)


def test_l2_normalize_zero_vector_finite_value_and_gradient():
    x = tf.constant([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 4.0, 0.0]])
    layer = L2Normalize()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[1.0, -2.0, 0.5, 3.0], [1.0, 1.0, 1.0, 1.0]]))
    g = tape.gradient(loss, x).numpy()
    y = y.numpy()
    assert np.isfinite(y).all() and np.isfinite(g).all()
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_allclose(y[1], [0.6, 0.0, 0.8, 0.0], rtol=1e-6)
    # d/dx of sum(u * x/|x|) = (u - (u.n) n) / |x| for the non-zero row
    n = np.array([0.6, 0.0, 0.8, 0.0])
    u = np.ones(4)
    np.testing.assert_allclose(g[1], (u - u.dot(n) * n) / 5.0, rtol=1e-5, atol=1e-6)


def test_model_saved_with_one_path_loads_and_runs_with_every_other(tmp_path):
    """The path is not part of the weights: a .keras file written with ``blockdiag`` loads (safe mode)
    and its weights run unchanged under every other path, whole-map (matmul) conv included."""
    import kerasface  # noqa: F401  (registers the layers for load_model)

    def build(path):
        inp = keras.Input((6, 6, 16))
        y = GroupConv2D(32, 3, strides=2, groups=4, implementation=path, name="g1")(inp)
        y = GroupConv2D(32, 3, padding="valid", groups=4, implementation=path, name="g2")(y)
        return keras.Model(inp, y)

    x = np.random.default_rng(11).standard_normal((3, 6, 6, 16)).astype("float32")
    saved = build("blockdiag")
    want = keras.ops.convert_to_numpy(saved(x))
    assert np.abs(want).max() > 0.1
    saved.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.get_layer("g1").implementation == "blockdiag"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), want, rtol=1e-5, atol=1e-5)
    for path in ("native", "split", "depthwise", "matmul", "auto"):
        other = build(path)
        other.load_weights(tmp_path / "m.keras")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(other(x)), want, rtol=1e-4, atol=1e-4,
                                   err_msg=path)


def test_set_group_conv_implementation_reaches_nested_layers_and_keeps_results():
    """A loaded model's grouped convs switch path (nested models included); the output does not change."""
    from kerasface.layers import set_group_conv_implementation

    inner_in = keras.Input((8, 8, 8))
    inner = keras.Model(inner_in, GroupConv2D(8, 3, groups=4, implementation="split", name="g2")(inner_in))
    x = inp = keras.Input((8, 8, 4))
    x = GroupConv2D(8, 3, groups=2, implementation="split", name="g1")(x)
    model = keras.Model(inp, inner(x))
    data = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    before = keras.ops.convert_to_numpy(model(data))
    assert set_group_conv_implementation(model, "depthwise") == 2
    assert model.get_layer("g1").implementation == inner.get_layer("g2").implementation == "depthwise"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(data)), before, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="implementation must be one of"):
        set_group_conv_implementation(model, "fastest")
