"""SqNxt-23v5 (report 002's students): exact parameter counts, both layouts, names, real faces.

The four full-size models (report layout at 218x178 through the registry,
paper layout at 224x224) are built once per module, never trained; the paper
layout (not registered) predicts on bundled LFW faces at width 0.5 and 64x64.
Build, predict, get_config and fresh-process reload of the registered
(report-layout) backbones: test_backbones.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.models import build_backbone, profile_model, sqnxt23v5, sqnxt23v5_w1, sqnxt23v5_w2
from kerasface.models.squeezenext import SQNXT_REPORT_PARAMS
from kerasface.ops import normalize_faces

CLASSES = 2360  # report 002's identities (the teacher's count reproduces all three figures)
OSMR_1000 = {1.0: 921_816, 2.0: 3_366_344}  # imgclsmob's sqnxt23v5_w1 / _w2: conv biases, 1000-way fc


def report_hand_count(width):
    """(conv kernels, BN channels) of the report layout, from the layout alone."""
    convs = [(5, 5, 3, 64)]
    cin = 64
    for n, c in zip((2, 4, 14, 1), (32, 64, 128, 256)):
        c = int(c * width)
        convs.append((1, 1, cin, c))  # stage transition
        for _ in range(n):
            convs += [(1, 1, c, c // 2), (1, 1, c // 2, c // 4), (3, 1, c // 4, c // 2),
                      (1, 3, c // 2, c // 2), (1, 1, c // 2, c)]
        cin = c
    convs.append((1, 1, cin, 128))
    return sum(a * b * i * o for a, b, i, o in convs), sum(o for *_, o in convs)


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    out = {}
    for width, name in ((1.0, "sqnxt23v5_w1"), (2.0, "sqnxt23v5_w2")):
        report = build_backbone(name)
        paper = sqnxt23v5(width, input_shape=(224, 224, 3), layout="paper")
        out[width] = (report, profile_model(report), paper, profile_model(paper))
    return out


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_report_layout_param_counts_are_exact(models, width):
    report, prof, _, _ = models[width]
    kernels, bn_channels = report_hand_count(width)
    assert (prof.trainable_params, prof.non_trainable_params) == (kernels + 2 * bn_channels, 2 * bn_channels)
    assert tuple(report.output_shape) == (None, 128)
    logits = keras.layers.Dense(CLASSES, name="logits")(report.output)  # classifier with bias
    full = keras.Model(report.input, logits)
    trainable = sum(int(np.prod(w.shape)) for w in full.trainable_weights)
    assert trainable == SQNXT_REPORT_PARAMS[width] == {1.0: 1_106_456, 2.0: 3_399_352}[width]
    assert full.count_params() == trainable + 2 * bn_channels  # Keras also counts the BN statistics


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_paper_layout_matches_imgclsmob_and_not_the_report(models, width):
    _, _, paper, prof = models[width]
    conv_channels = sum(layer.filters for layer in paper.layers if isinstance(layer, keras.layers.Conv2D))
    final = int(128 * width)
    assert tuple(paper.output_shape) == (None, final)
    assert prof.trainable_params + conv_channels + (final + 1) * 1000 == OSMR_1000[width]
    with_head = prof.trainable_params + final * 128 + 129 * CLASSES  # Dense final->128, Dense(2360) with bias
    assert with_head - SQNXT_REPORT_PARAMS[width] == {1.0: 0, 2.0: 32_832}[width]  # 1.0 only, by coincidence


@pytest.mark.parametrize("width", [1.0, 2.0])
def test_layout_shapes_and_names(models, width):
    report, _, paper, _ = models[width]
    assert tuple(report.input_shape) == (None, 218, 178, 3)
    for m in (report, paper):
        names = [layer.name for layer in m.layers]
        assert len(names) == len(set(names)) and not [n for n in names if "1x1" in n]  # paper: not registered
        assert not any(c.use_bias for c in m.layers if isinstance(c, keras.layers.Conv2D))
    stem = report.get_layer("stem_conv")
    assert stem.kernel_size == (5, 5) and stem.strides == (2, 2) and stem.filters == 64
    assert tuple(report.get_layer("stem_pool").output.shape[1:]) == (54, 44, 64)
    sizes = ((54, 44), (27, 22), (14, 11), (7, 6))
    for s, (n, c, hw) in enumerate(zip((2, 4, 14, 1), (32, 64, 128, 256), sizes), start=1):
        c = int(c * width)
        assert report.get_layer(f"stage{s}_transition").strides == ((1, 1) if s == 1 else (2, 2))
        assert tuple(report.get_layer(f"stage{s}_block{n}_add").output.shape[1:]) == (*hw, c)
        assert f"stage{s}_block{n + 1}_add" not in [layer.name for layer in report.layers]
        blk = [report.get_layer(f"stage{s}_block1_conv{k}") for k in range(1, 6)]
        assert [b.filters for b in blk] == [c // 2, c // 4, c // 2, c // 2, c]
        assert [b.kernel_size for b in blk] == [(1, 1), (1, 1), (3, 1), (1, 3), (1, 1)]
        paper_names = [layer.name for layer in paper.layers]
        assert f"stage{s}_block1_proj" in paper_names and f"stage{s}_block2_proj" not in paper_names
    assert report.get_layer("final_conv").filters == 128
    paper_stem = paper.get_layer("stem_conv")
    assert paper_stem.filters == int(64 * width) and paper_stem.kernel_size == (7, 7)
    assert report.get_layer("embedding").rate == pytest.approx(0.2)  # 128-d pooled features, dropped out


def test_builders_and_bad_arguments():
    m = sqnxt23v5_w2(input_shape=(64, 64, 3), embedding_dim=32)
    assert tuple(m.output_shape) == (None, 32) and m.get_layer("stage1_transition").filters == 64
    assert not m.get_layer("bottleneck").use_bias
    assert isinstance(m.get_layer("embedding"), keras.layers.BatchNormalization)
    assert sqnxt23v5_w1(input_shape=(48, 40, 3)).name == "sqnxt23v5_w1"
    with pytest.raises(ValueError, match="multiple of 4"):
        sqnxt23v5(width=0.1, input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="layout"):
        sqnxt23v5(layout="v6")
    with pytest.raises(ValueError, match="at least 32"):
        sqnxt23v5(input_shape=(16, 16, 3))


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    rels = [f"{d.name}/{sorted(d.glob('*.jpg'))[0].name}" for d in sorted(root.iterdir()) if d.is_dir()][:4]
    images, ok = load_images(root, rels, size=64, progress=False)
    assert ok.all()
    return normalize_faces(images)


def test_paper_layout_embeds_real_faces(faces):
    """The registered report layout goes through test_backbones.py; the paper layout is checked here."""
    keras.utils.set_random_seed(1)
    m = sqnxt23v5(0.5, input_shape=(64, 64, 3), layout="paper", embedding_dim=64)
    rng = np.random.default_rng(2)
    for w in m.non_trainable_weights:  # BN statistics away from their initial values
        low = 0.5 if "variance" in w.path else -0.1
        w.assign(rng.uniform(low, low + 0.6, w.shape).astype("float32"))
    want = keras.ops.convert_to_numpy(m(faces, training=False))
    assert want.shape == (len(faces), 64) and want.dtype == np.float32 and np.isfinite(want).all()
    assert np.std(want, axis=0).mean() > 0  # different faces, different embeddings


def test_gdc_pool_against_numpy_and_its_counts(tmp_path):
    """pooling="gdc": a depthwise conv as large as the final map (one weight per channel and position), BN, then
    the usual embedding; checked against a NumPy weighted sum, with the counts it adds and a save/load."""
    shape = (112, 112, 3)
    avg = sqnxt23v5(width=0.5, input_shape=shape, dropout=0.0)
    gdc = sqnxt23v5(width=0.5, input_shape=shape, dropout=0.0, pooling="gdc")
    assert gdc.name == "sqnxt23v5_w0_5_gdc" and gdc.output_shape == avg.output_shape == (None, 128)
    final = gdc.get_layer("final_conv_relu").output.shape  # 112 -> a 4x4 map of 128 channels
    assert tuple(final[1:]) == (4, 4, 128)
    trainable = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)  # noqa: E731
    assert trainable(gdc) - trainable(avg) == 4 * 4 * 128 + 2 * 128  # depthwise kernel + BN gamma, beta
    rng = np.random.default_rng(0)
    for w in gdc.weights:  # any values: BN statistics made up, so the check covers them too
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in w.path
                 else rng.normal(0, 0.3, w.shape).astype("float32"))
    x = rng.uniform(-1, 1, (2, *shape)).astype("float32")
    feats = keras.Model(gdc.inputs, gdc.get_layer("final_conv_relu").output)(x).numpy()
    kernel = gdc.get_layer("gdc_conv").kernel.numpy()[..., 0]  # (4, 4, 128)
    bn = gdc.get_layer("gdc_bn")
    pooled = (feats * kernel).sum(axis=(1, 2))
    want = (pooled - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon) * bn.gamma.numpy() \
        + bn.beta.numpy()
    np.testing.assert_allclose(gdc(x, training=False).numpy(), want, rtol=1e-4, atol=1e-4)
    gdc.save(tmp_path / "gdc.keras")
    again = keras.saving.load_model(tmp_path / "gdc.keras")
    np.testing.assert_allclose(again(x, training=False).numpy(), want, rtol=1e-4, atol=1e-4)
    assert build_backbone("sqnxt23v5_w1_gdc", input_shape=shape).name == "sqnxt23v5_w1_gdc"
    with pytest.raises(ValueError, match="pooling must be one of"):
        sqnxt23v5(input_shape=shape, pooling="max")
