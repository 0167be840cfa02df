"""VarGFaceNet: the report's parameter counts, MACs and grouped-conv structure.

The full-size models are only built (a few seconds), never trained. Build, predict,
get_config and fresh-process reload of every registered backbone: test_backbones.py.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kerasface.layers import GroupConv2D
from kerasface.models import build_backbone, profile_model, vargfacenet, vargfacenet_reduced, vargfacenet_tiny

# Report 000: trainable parameters (PyTorch-profiler count) and MACs ("FLOPs").
REPORT = {
    "vargfacenet": dict(params=5_195_130, macs=525.62e6, builder=vargfacenet, gconvs=3 + 4 * 3 + 2 * (2 + 6 + 3) + 1),
    "vargfacenet_reduced": dict(params=4_866_730, macs=466.26e6, builder=vargfacenet_reduced,
                                gconvs=3 + 4 * 3 + 2 * (2 + 4 + 3) + 1),
}


@pytest.fixture(scope="module")
def full_models():
    return {name: spec["builder"]() for name, spec in REPORT.items()}


@pytest.fixture(scope="module")
def profiles(full_models):
    return {name: profile_model(m) for name, m in full_models.items()}


@pytest.mark.parametrize("name", list(REPORT))
def test_trainable_params_match_report(name, full_models, profiles):
    m, p = full_models[name], profiles[name]
    assert p.trainable_params == REPORT[name]["params"]
    assert int(sum(np.prod(w.shape) for w in m.trainable_weights)) == REPORT[name]["params"]
    assert p.total_params == m.count_params()


def test_reduced_difference(profiles):
    diff = profiles["vargfacenet"].trainable_params - profiles["vargfacenet_reduced"].trainable_params
    assert diff == 328_400


@pytest.mark.parametrize("name", list(REPORT))
def test_non_trainable_are_bn_moving_stats(name, full_models, profiles):
    m = full_models[name]
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns
    # Channels of each BN taken from its input tensor, not from its weights.
    channels = sum(int(layer.input.shape[-1]) for layer in bns)
    assert profiles[name].non_trainable_params == 2 * channels
    assert int(sum(np.prod(w.shape) for w in m.non_trainable_weights)) == 2 * channels


@pytest.mark.parametrize("name", list(REPORT))
def test_macs_close_to_report(name, profiles):
    macs = profiles[name].macs
    assert abs(macs - REPORT[name]["macs"]) / REPORT[name]["macs"] < 0.05, macs


@pytest.mark.parametrize("name", list(REPORT))
def test_full_size_input_and_output(name, full_models):
    m = full_models[name]
    assert tuple(m.input_shape) == (None, 112, 112, 3)
    assert tuple(m.output_shape) == (None, 512)


@pytest.mark.parametrize("name", list(REPORT))
def test_grouped_convs_are_group_conv2d(name, full_models):
    layers_ = full_models[name].layers
    grouped_conv2d = [layer.name for layer in layers_
                      if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1]
    assert grouped_conv2d == []
    gconvs = [layer for layer in layers_ if isinstance(layer, GroupConv2D)]
    assert len(gconvs) == REPORT[name]["gconvs"]
    # Variable group convolution: 8 input channels per group everywhere.
    assert {layer.in_channels // layer.groups for layer in gconvs} == {8}
    assert all(layer.groups > 1 for layer in gconvs)
    embed = full_models[name].get_layer("embed_gconv")
    assert isinstance(embed, GroupConv2D) and embed.groups == 128 and embed.kernel_size == (7, 7)


def test_profiler_macs_hand_formula(full_models, profiles):
    rows = {r[0]: r for r in profiles["vargfacenet"].layers}
    # conv1: 3x3 conv, 3 -> 40 channels, 112x112 output
    assert rows["conv1"][1] == "Conv2D"
    assert rows["conv1"][4] == 112 * 112 * 40 * 3 * 3 * 3
    # stage-2 down-sampling branch: 40 -> 80 channels, stride 2 (28x28), 5 groups of 8 inputs
    assert rows["stage2_down_branch1_gconv"][1] == "GroupConv2D"
    assert rows["stage2_down_branch1_gconv"][4] == 28 * 28 * 80 * 3 * 3 * (40 // 5)
    # embedding group conv: 7x7 kernel over the whole map, 1024 outputs, 8 inputs per group
    assert rows["embed_gconv"][4] == 1 * 1 * 1024 * 7 * 7 * 8
    # dense: 512 x 512
    assert rows["embed_fc"][4] == 512 * 512
    # layers that do no multiply-accumulates
    assert rows["conv1_bn"][4] == 0 and rows["conv1_act"][4] == 0
    assert profiles["vargfacenet"].macs == sum(r[4] for r in rows.values())


@pytest.mark.parametrize("shape", [(100, 100, 3), (112, 120, 3), (40, 40, 3)])
def test_input_not_divisible_by_16_raises(shape):
    with pytest.raises(ValueError, match="divisible by 16"):
        vargfacenet_tiny(input_shape=shape)
    with pytest.raises(ValueError, match="divisible by 16"):
        vargfacenet(input_shape=shape)


def test_embedding_kernel_covers_the_final_map():
    tiny = build_backbone("vargfacenet_tiny", input_shape=(32, 32, 3))
    assert tiny.get_layer("embed_gconv").kernel_size == (2, 2)  # 32 / 16: a 2x2 map


def test_embedding_float32_under_mixed_precision():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        m = vargfacenet_tiny(input_shape=(32, 32, 3), implementation="split")
        assert m.get_layer("conv1").compute_dtype == "float16"
        assert m.output.dtype == "float32"
        y = m(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32"), training=False)
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert np.isfinite(keras.ops.convert_to_numpy(y)).all()
    finally:
        keras.config.set_dtype_policy(old)
    assert keras.config.dtype_policy().name == old.name


def test_activation_memory_is_positive(profiles):
    d = profiles["vargfacenet"].as_dict()
    assert d["activation_mb"] > 1
    assert d["total_params"] == d["trainable_params"] + d["non_trainable_params"]
    assert math.isclose(profiles["vargfacenet"].activation_bytes / 2**20, d["activation_mb"])
