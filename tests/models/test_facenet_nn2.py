"""FaceNet NN2 against report 004's table, and the triplet graph around it.

The 224x224 model is built once per module (never trained); the triplet graph
and its ``.keras`` round trip in a fresh process use a 96x96 input. Build, predict,
get_config and fresh-process reload of the backbone alone: test_backbones.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.layers import EuclideanDistance, L2Normalize, L2Pooling2D, LocalResponseNormalization, StackDistances
from kerasface.losses import TripletAccuracy, TripletHingeLoss
from kerasface.models import TripletModel, build_backbone, facenet_nn2, get_embedding_model, profile_model
from kerasface.ops import normalize_faces

# Report 004 (FaceNet NN2 table): block -> (output HxWxC at 224, params, FLOPs, and for inception
# blocks #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool kind, pool proj)
TABLE = {
    "conv1": ((112, 112, 64), "9K", "119M", None),
    "conv2": ((56, 56, 192), "115K", "360M", None),
    "inception_3a": ((28, 28, 256), "164K", "128M", (64, 96, 128, 16, 32, "max", 32)),
    "inception_3b": ((28, 28, 320), "228K", "179M", (64, 96, 128, 32, 64, "l2", 64)),
    "inception_3c": ((14, 14, 640), "398K", "108M", (0, 128, 256, 32, 64, "max", 0)),
    "inception_4a": ((14, 14, 640), "545K", "107M", (256, 96, 192, 32, 64, "l2", 128)),
    "inception_4b": ((14, 14, 640), "595K", "117M", (224, 112, 224, 32, 64, "l2", 128)),
    "inception_4c": ((14, 14, 640), "654K", "128M", (192, 128, 256, 32, 64, "l2", 128)),
    "inception_4d": ((14, 14, 640), "722K", "142M", (160, 144, 288, 32, 64, "l2", 128)),
    "inception_4e": ((7, 7, 1024), "717K", "56M", (0, 160, 256, 64, 128, "max", 0)),
    "inception_5a": ((7, 7, 1024), "1.6M", "78M", (384, 192, 384, 48, 128, "l2", 128)),
    "inception_5b": ((7, 7, 1024), "1.6M", "78M", (384, 192, 384, 48, 128, "max", 128)),
    "fc": ((128,), "131K", "0.1M", None),
}
REPORT_PARAMS, REPORT_MACS = 7.5e6, 1.6e9


def _value(text):
    """'164K' -> (164000, 1000): the value and one unit of its last printed digit."""
    scale = {"K": 1e3, "M": 1e6}[text[-1]]
    digits = text[:-1]
    unit = scale * (10 ** -len(digits.split(".")[1]) if "." in digits else 1)
    return float(digits) * scale, unit


def _block_layers(model, block):
    if block == "conv2":
        return [model.get_layer("conv2_reduce"), model.get_layer("conv2")]
    return [layer for layer in model.layers if layer.name == block or layer.name.startswith(block + "_")]


@pytest.fixture(scope="module")
def nn2():
    keras.utils.set_random_seed(0)
    model = facenet_nn2()
    return model, profile_model(model)


def test_params_and_macs_close_to_report(nn2):
    model, prof = nn2
    assert abs(prof.trainable_params - REPORT_PARAMS) / REPORT_PARAMS < 0.05, prof.trainable_params
    assert abs(prof.macs - REPORT_MACS) / REPORT_MACS < 0.10, prof.macs
    assert prof.total_params == model.count_params()


def test_param_count_from_table_widths(nn2):
    """Hand count from the table: conv weights (no bias), BN gamma/beta per conv channel, FC."""
    model, prof = nn2
    weights = 7 * 7 * 3 * 64 + 64 * 64 + 3 * 3 * 64 * 192
    channels = 64 + 64 + 192
    cin = 192
    for _, _, _, spec in TABLE.values():
        if spec is None:
            continue
        n1, r3, n3, r5, n5, _, proj = spec
        weights += cin * (n1 + r3 + r5 + proj) + 9 * r3 * n3 + 25 * r5 * n5
        channels += n1 + r3 + n3 + r5 + n5 + proj
        cin = n1 + n3 + n5 + (proj or cin)
    weights += 1024 * 128 + 128
    assert cin == 1024
    assert prof.trainable_params == weights + 2 * channels == 7_464_224
    assert prof.non_trainable_params == 2 * channels == 15_840  # BN moving mean/variance


@pytest.mark.parametrize("block", list(TABLE))
def test_each_block_matches_table(nn2, block):
    model, prof = nn2
    shape, params, flops, spec = TABLE[block]
    out_layer = {"conv1": "conv1_relu", "conv2": "conv2_relu", "fc": "fc"}.get(block, f"{block}_concat")
    assert tuple(model.get_layer(out_layer).output.shape[1:]) == shape
    convs = [layer for layer in _block_layers(model, block)
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    n_weights = sum(int(np.prod(layer.kernel.shape)) for layer in convs)
    want, unit = _value(params)
    assert abs(n_weights - want) <= unit, (n_weights, params)
    rows = {r[0]: r for r in prof.layers}
    macs = sum(rows[layer.name][4] for layer in convs)
    want, unit = _value(flops)
    assert abs(macs - want) <= max(unit, 0.02 * want), (macs, flops)
    if spec is None:
        return
    n1, r3, n3, r5, n5, pool, proj = spec
    names = {layer.name: layer for layer in _block_layers(model, block)}
    widths = {"b1_conv": n1, "b3_reduce": r3, "b3_conv": n3, "b5_reduce": r5, "b5_conv": n5, "pool_proj": proj}
    for part, width in widths.items():
        if width:
            assert names[f"{block}_{part}"].filters == width
        else:
            assert f"{block}_{part}" not in names
    pool_layer = names[f"{block}_pool"]
    assert isinstance(pool_layer, L2Pooling2D if pool == "l2" else keras.layers.MaxPooling2D)
    stride = 2 if block in ("inception_3c", "inception_4e") else 1
    assert pool_layer.pool_size == (3, 3) and tuple(pool_layer.strides) == (stride, stride)
    assert names[f"{block}_b3_conv"].strides == (stride, stride)
    assert names[f"{block}_b5_conv"].kernel_size == (5, 5)
    assert names[f"{block}_b3_reduce"].strides == (1, 1)


def test_layer_names_are_readable(nn2):
    model, _ = nn2
    names = [layer.name for layer in model.layers]
    assert {"conv1", "pool1", "conv2_reduce", "conv2", "pool2", "inception_3a_b1_conv",
            "inception_3a_b3_reduce", "inception_3a_pool_proj", "avg_pool", "fc", "embedding"} <= set(names)


def test_structure_bn_relu_and_embedding(nn2):
    model, _ = nn2
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 59 and not any(c.use_bias for c in convs)
    assert all(isinstance(model.get_layer(f"{c.name}_bn"), keras.layers.BatchNormalization) for c in convs)
    assert sum(isinstance(layer, L2Pooling2D) for layer in model.layers) == 6  # 3b, 4a-4d, 5a
    assert isinstance(model.get_layer("avg_pool"), keras.layers.GlobalAveragePooling2D)
    assert isinstance(model.get_layer("embedding"), L2Normalize)
    assert tuple(model.input_shape) == (None, 224, 224, 3) and tuple(model.output_shape) == (None, 128)


def test_options_reproduce_the_reports_variants():
    lrn = facenet_nn2(norm="lrn", input_shape=(32, 32, 3))
    assert not [layer for layer in lrn.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert [layer.name for layer in lrn.layers if isinstance(layer, LocalResponseNormalization)] == ["norm1", "norm2"]
    assert all(layer.use_bias for layer in lrn.layers if isinstance(layer, keras.layers.Conv2D))
    assert profile_model(lrn).trainable_params == 7_448_256 + 7_920 + 128  # conv weights + biases, FC
    # neither BN nor LRN (the report's model before its "batch normalize" fix): the same weights as LRN's
    plain = facenet_nn2(norm="none", input_shape=(32, 32, 3))
    assert not [layer for layer in plain.layers
                if isinstance(layer, (keras.layers.BatchNormalization, LocalResponseNormalization))]
    assert all(layer.use_bias for layer in plain.layers if isinstance(layer, keras.layers.Conv2D))
    assert profile_model(plain).trainable_params == plain.count_params() == 7_448_256 + 7_920 + 128
    # the report's other attempted fixes: max pooling instead of L2 pooling, no final L2 layer
    fixes = facenet_nn2(l2_pooling=False, l2_normalize=False, input_shape=(32, 32, 3))
    assert not [layer for layer in fixes.layers if isinstance(layer, L2Pooling2D)]
    assert isinstance(fixes.get_layer("inception_3b_pool"), keras.layers.MaxPooling2D)
    assert isinstance(fixes.get_layer("embedding"), keras.layers.Dense)
    assert fixes.count_params() == 7_464_224 + 15_840  # the same weights as the default model
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32")
    for m in (lrn, fixes):
        y = keras.ops.convert_to_numpy(m(x, training=False))
        assert y.shape == (2, 128) and np.isfinite(y).all()
    assert not np.allclose(np.linalg.norm(keras.ops.convert_to_numpy(fixes(x)), axis=1), 1.0)
    with pytest.raises(ValueError, match="norm"):
        facenet_nn2(norm="group")


@pytest.mark.parametrize("shape", [(100, 100, 3), (224, 200, 3), (16, 16, 3)])
def test_input_not_divisible_by_32_raises(shape):
    with pytest.raises(ValueError, match="divisible by 32"):
        facenet_nn2(input_shape=shape)


def test_embeddings_are_unit_length():
    m = build_backbone("facenet_nn2", input_shape=(32, 32, 3))
    y = keras.ops.convert_to_numpy(m(np.random.default_rng(1).uniform(-1, 1, (3, 32, 32, 3)).astype("float32")))
    assert y.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, rtol=1e-5)


def test_embedding_float32_under_mixed_precision():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        m = facenet_nn2(input_shape=(32, 32, 3))
        assert m.get_layer("conv1").compute_dtype == "float16"
        assert m.get_layer("inception_3b_pool").compute_dtype == "float16"
        assert m.output.dtype == "float32"
        t = TripletModel(m)
        assert t.output.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(old)


# ----------------------------------------------------------------------------- triplet graph
SMALL = 96


@pytest.fixture(scope="module")
def triplet():
    keras.utils.set_random_seed(3)
    emb = facenet_nn2(input_shape=(SMALL, SMALL, 3))
    return emb, TripletModel(emb)


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and len(list(d.glob("*.jpg"))) >= 2)[:3]
    rels = []
    for i, n in enumerate(names):  # anchor, positive (same person), negative (next person)
        imgs = sorted((root / n).glob("*.jpg"))
        other = sorted((root / names[(i + 1) % len(names)]).glob("*.jpg"))
        rels += [f"{n}/{imgs[0].name}", f"{n}/{imgs[1].name}", f"{names[(i + 1) % len(names)]}/{other[0].name}"]
    images, ok = load_images(root, rels, size=SMALL, progress=False)
    assert ok.all()
    x = normalize_faces(images)
    return x[0::3], x[1::3], x[2::3]


def test_triplet_graph_shapes_and_shared_weights(triplet, faces):
    emb, model = triplet
    assert [t.name for t in model.inputs] == ["anchor", "positive", "negative"]
    assert tuple(model.output_shape) == (None, 2, 1)
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert nested == [emb] and get_embedding_model(model) is emb
    assert len(model.weights) == len(emb.weights)  # distances and stack have no weights
    assert isinstance(model.get_layer("pos_dist"), EuclideanDistance)
    assert isinstance(model.get_layer("neg_dist"), EuclideanDistance)
    assert isinstance(model.get_layer("distances"), StackDistances)
    a, p, n = faces
    out = keras.ops.convert_to_numpy(model([a, p, n], training=False))
    ea, ep, en = (keras.ops.convert_to_numpy(emb(v, training=False)) for v in (a, p, n))
    np.testing.assert_allclose(out[:, 0, 0], np.linalg.norm(ea - ep, axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[:, 1, 0], np.linalg.norm(ea - en, axis=1), rtol=1e-4, atol=1e-6)
    same = keras.ops.convert_to_numpy(model([a, a, n], training=False))
    np.testing.assert_allclose(same[:, 0, 0], 1e-6, rtol=1e-3)  # sqrt(eps), not 0 or NaN


def test_get_embedding_model_rejects_other_graphs():
    with pytest.raises(ValueError, match="nested models"):
        get_embedding_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))


def test_triplet_round_trip_in_fresh_process(triplet, faces, tmp_path, fresh_process_predict):
    emb, model = triplet
    a, p, n = faces
    model.compile(optimizer="sgd", loss=TripletHingeLoss(margin=0.3), metrics=[TripletAccuracy()])
    # BN statistics that are not the initial ones, so the round trip must carry them
    # (no training step here: tracing the NN2 triplet train step costs a minute or more on 2 CPUs)
    rng = np.random.default_rng(5)
    for w in emb.non_trainable_weights:
        low = 0.5 if "variance" in w.path else -0.1
        w.assign(rng.uniform(low, low + 0.6, w.shape).astype("float32"))
    want = keras.ops.convert_to_numpy(model([a, p, n], training=False))
    path = tmp_path / "triplet.keras"
    model.save(path)
    ((got, info),) = fresh_process_predict([(path, [a, p, n])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert info["name"] == model.name and info["n_weights"] == len(model.weights)
    # in this process too: the compiled loss comes back as the registered class, and the
    # embedding model taken out of the loaded graph embeds like the original
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, TripletHingeLoss) and loaded.loss.margin == 0.3
    loaded_emb = get_embedding_model(loaded)
    assert loaded_emb.name == emb.name
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded_emb(a, training=False)),
                               keras.ops.convert_to_numpy(emb(a, training=False)), rtol=1e-5, atol=1e-6)
