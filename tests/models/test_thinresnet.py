"""Report 001's ThinResNets: parameter counts, layout and names.

The three 224x224 models are built once per module (never trained). Build, predict
(real faces), get_config and fresh-process reload of every registered backbone: test_backbones.py.
"""

from __future__ import annotations

import keras
import pytest

from kerasface.models import build_backbone, profile_model, thin_resnet34, thin_resnet50, thin_resnet50_v2
from kerasface.models.thinresnet import THIN_RESNETS

# report 001: about 4.9M / 6M / 12.4M; the exact figures of the SE-basic-block reading
REPORT = {"thin_resnet34": 4.9e6, "thin_resnet50": 6.0e6, "thin_resnet50_v2": 12.4e6}
EXACT = {"thin_resnet34": 4_904_976, "thin_resnet50": 6_017_058, "thin_resnet50_v2": 12_367_490}
BUILDERS = {"thin_resnet34": thin_resnet34, "thin_resnet50": thin_resnet50, "thin_resnet50_v2": thin_resnet50_v2}
LAYOUT = {"thin_resnet34": ((2, 3, 3, 3), (48, 96, 128, 256)),
          "thin_resnet50": ((3, 4, 6, 3), (48, 96, 128, 256)),
          "thin_resnet50_v2": ((3, 4, 6, 3), (48, 96, 192, 384))}


def hand_count(blocks, widths, stem=48, reduction=8, emb=512):
    """(trainable, BN moving statistics) of SE basic-block ResNets, counted from the layout alone."""
    weights = 7 * 7 * 3 * stem
    bn_channels = stem
    cin = stem
    for stage, (n, c) in enumerate(zip(blocks, widths)):
        for i in range(n):
            weights += 9 * cin * c + 9 * c * c  # two 3x3 convs, no bias
            bn_channels += 2 * c
            r = c // reduction
            weights += c * r + r + r * c + c  # SE: two FCs with bias
            if (stage > 0 and i == 0) or cin != c:
                weights += cin * c  # projection shortcut
                bn_channels += c
            cin = c
    weights += cin * emb + emb
    return weights + 2 * bn_channels, 2 * bn_channels


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    out = {}
    for name, builder in BUILDERS.items():
        m = builder()
        out[name] = (m, profile_model(m))
    return out


@pytest.mark.parametrize("name", list(BUILDERS))
def test_param_counts_match_report(models, name):
    model, prof = models[name]
    assert model.count_params() == prof.total_params == EXACT[name] == THIN_RESNETS[name][2]
    assert abs(prof.total_params - REPORT[name]) / REPORT[name] < 0.02
    assert abs(prof.trainable_params - EXACT[name]) / EXACT[name] < 0.002  # BN statistics only
    trainable, stats = hand_count(*LAYOUT[name])
    assert (prof.trainable_params, prof.non_trainable_params) == (trainable, stats)


def test_measured_trainable_params_and_macs(models):
    got = {n: (p.trainable_params, round(p.macs / 1e6)) for n, (_, p) in models.items()}
    assert got == {"thin_resnet34": (4_897_776, 1039), "thin_resnet50": (6_007_746, 1473),
                   "thin_resnet50_v2": (12_354_722, 2083)}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_layout_shapes_and_names(models, name):
    model, _ = models[name]
    blocks, widths = LAYOUT[name]
    names = [layer.name for layer in model.layers]
    stem = model.get_layer("stem_conv")
    assert stem.filters == 48 and stem.kernel_size == (7, 7) and stem.strides == (2, 2)
    assert tuple(model.get_layer("stem_relu").output.shape[1:]) == (112, 112, 48)
    assert tuple(model.get_layer("stem_pool").output.shape[1:]) == (56, 56, 48)
    for s, (n, c, size) in enumerate(zip(blocks, widths, (56, 28, 14, 7)), start=1):
        assert f"stage{s}_block{n + 1}_out" not in names
        assert tuple(model.get_layer(f"stage{s}_block{n}_out").output.shape[1:]) == (size, size, c)
        for i in range(1, n + 1):
            assert model.get_layer(f"stage{s}_block{i}_se_reduce").units == c // 8
            assert model.get_layer(f"stage{s}_block{i}_se_expand").units == c
            assert isinstance(model.get_layer(f"stage{s}_block{i}_se"), keras.layers.Multiply)
            assert (f"stage{s}_block{i}_proj" in names) == (s > 1 and i == 1)
    assert isinstance(model.get_layer("stage2_block3_se"), keras.layers.Multiply)
    assert isinstance(model.get_layer("avg_pool"), keras.layers.GlobalAveragePooling2D)
    assert tuple(model.output_shape) == (None, 512) and model.get_layer("embedding").units == 512
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(c.use_bias for c in convs)


def test_bad_sizes_and_embedding_dim():
    for shape in [(100, 100, 3), (224, 200, 3)]:
        with pytest.raises(ValueError, match="divisible by 32"):
            thin_resnet34(input_shape=shape)
    m = build_backbone("thin_resnet50_v2", input_shape=(96, 64, 3), embedding_dim=128)
    assert tuple(m.output_shape) == (None, 128)


def drawn_hand_count(blocks, widths, stem=64, expansion=4, dim=512):
    """Trainable parameters of report 001's table as drawn: 7x7 stem + BN, bottlenecks [1x1 c, 3x3 c, 1x1 4c]
    each conv + BN (gamma, beta), a projection (1x1 conv + BN) where the width or stride changes, FC with bias."""
    total, c_in = 7 * 7 * 3 * stem + 2 * stem, stem
    for n, c in zip(blocks, widths):
        out = expansion * c
        for i in range(n):
            total += c_in * c + 9 * c * c + c * out + 2 * (c + c + out)
            if i == 0:
                total += c_in * out + 2 * out
            c_in = out
    return total + c_in * dim + dim


@pytest.mark.parametrize("name", sorted(THIN_RESNETS))
def test_drawn_bottleneck_layout_counts(name):
    from kerasface.models import build_backbone, profile_model
    from kerasface.models.thinresnet import DRAWN_TRAINABLE

    blocks, widths, interpretation = THIN_RESNETS[name]
    model = build_backbone(f"{name}_bottleneck", input_shape=(64, 64, 3))
    trainable = profile_model(model).trainable_params
    assert trainable == drawn_hand_count(blocks, widths) == DRAWN_TRAINABLE[name]
    assert model.get_layer("stem_conv").filters == 64 and model.output_shape == (None, 512)
    assert model.get_layer("stage1_block1_conv3").filters == 4 * widths[0]
    assert trainable > 1.1 * interpretation  # the drawing does not land on "about 4.9M / 6M / 12.4M"
