"""Report 001's ThinResNets: parameter counts, layout, names, real faces and a fresh-process round trip.

The three 224x224 models are built once per module (never trained); the round
trip uses 64x64 inputs and bundled LFW faces.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.models import build_backbone, list_backbones, profile_model, thin_resnet34, thin_resnet50, thin_resnet50_v2
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
    assert len(names) == len(set(names)) and not [n for n in names if "1x1" in n]
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
    assert model.output.dtype == "float32"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(c.use_bias for c in convs)


def test_registry_and_bad_sizes():
    assert {"thin_resnet34", "thin_resnet50", "thin_resnet50_v2"} <= set(list_backbones())
    for shape in [(100, 100, 3), (224, 200, 3)]:
        with pytest.raises(ValueError, match="divisible by 32"):
            thin_resnet34(input_shape=shape)
    m = build_backbone("thin_resnet50_v2", input_shape=(96, 64, 3), embedding_dim=128)
    assert tuple(m.output_shape) == (None, 128)


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    rels = [f"{d.name}/{sorted(d.glob('*.jpg'))[0].name}" for d in sorted(root.iterdir()) if d.is_dir()][:4]
    images, ok = load_images(root, rels, size=64, progress=False)
    assert ok.all()
    return (images.astype(np.float32) - 127.5) / 128.0


def test_real_faces_and_round_trip_in_fresh_process(faces, tmp_path, fresh_process_predict):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(2)
    jobs, wants = [], []
    for name, builder in BUILDERS.items():
        m = builder(input_shape=(64, 64, 3))
        for w in m.non_trainable_weights:  # BN statistics that the round trip must carry
            low = 0.5 if "variance" in w.path else -0.1
            w.assign(rng.uniform(low, low + 0.6, w.shape).astype("float32"))
        want = keras.ops.convert_to_numpy(m(faces, training=False))
        assert want.shape == (len(faces), 512) and np.isfinite(want).all()
        assert np.std(want, axis=0).mean() > 0  # different faces, different embeddings
        path = tmp_path / f"{name}.keras"
        m.save(path)
        jobs.append((path, [faces]))
        wants.append((m, want))
    for (got, info), (m, want) in zip(fresh_process_predict(jobs), wants):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        assert info["name"] == m.name and info["n_weights"] == len(m.weights)
