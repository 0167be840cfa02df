"""Report 003's ResNet34 (torchvision layout + 512-d embedding) and its ArcFace training model.

ResNet34 at 224x224 is built once per module; the classification model around a
64x64 ResNet34 is saved and reloaded in a fresh process with ``import kerasface`` only.
Build, predict, get_config and fresh-process reload of the backbones alone: test_backbones.py.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.models import MarginHead, classification_model, get_embedding_model, profile_model, resnet18, resnet34
from kerasface.models.resnet import TORCHVISION_PARAMS_NO_FC
from kerasface.ops import normalize_faces

TORCHVISION_RESNET34_NO_FC = 21_284_672  # sum(p.numel()) of torchvision resnet34 without fc
TORCHVISION_RESNET18_NO_FC = 11_176_512
EMBEDDING = 512 * 512 + 512


@pytest.fixture(scope="module")
def r34():
    keras.utils.set_random_seed(0)
    m = resnet34()
    return m, profile_model(m)


def test_params_match_torchvision(r34):
    model, prof = r34
    assert TORCHVISION_PARAMS_NO_FC["resnet34"] == TORCHVISION_RESNET34_NO_FC
    assert prof.trainable_params == TORCHVISION_RESNET34_NO_FC + EMBEDDING == 21_547_328
    assert prof.non_trainable_params == 17_024  # BN running mean/var (torchvision buffers)
    assert model.count_params() == prof.total_params
    assert abs(prof.macs - 3.6e9) / 3.6e9 < 0.02  # torchvision: 3.66 GMACs at 224 with fc
    embed = model.get_layer("embedding")
    assert embed.units == 512 and embed.use_bias and embed.kernel.shape == (512, 512)


def test_resnet18_params():
    prof = profile_model(resnet18(input_shape=(32, 32, 3)))
    assert prof.trainable_params == TORCHVISION_RESNET18_NO_FC + EMBEDDING


def test_torchvision_layout(r34):
    model, _ = r34
    names = [layer.name for layer in model.layers]
    assert not [n for n in names if n.endswith("_se")]
    assert tuple(model.get_layer("stem_relu").output.shape[1:]) == (112, 112, 64)
    assert tuple(model.get_layer("stem_pool").output.shape[1:]) == (56, 56, 64)
    for s, (n, c, size) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), (56, 28, 14, 7)), start=1):
        assert tuple(model.get_layer(f"stage{s}_block{n}_out").output.shape[1:]) == (size, size, c)
        for i in range(1, n + 1):
            conv1 = model.get_layer(f"stage{s}_block{i}_conv1")
            stride = 2 if (s > 1 and i == 1) else 1
            assert conv1.strides == (stride, stride) and conv1.kernel_size == (3, 3)
            # torchvision pads symmetrically: explicit ZeroPadding2D(1) before each strided 3x3
            assert (f"stage{s}_block{i}_conv1_pad" in names) == (stride == 2)
            if stride == 2:
                proj = model.get_layer(f"stage{s}_block{i}_proj")
                assert proj.kernel_size == (1, 1) and proj.strides == (2, 2) and not proj.use_bias
                assert isinstance(model.get_layer(f"stage{s}_block{i}_proj_bn"), keras.layers.BatchNormalization)
            else:
                assert f"stage{s}_block{i}_proj" not in names
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 1 + 2 * 16 + 3 and not any(c.use_bias for c in convs)
    assert tuple(model.output_shape) == (None, 512)


def test_strided_conv_pads_like_pytorch():
    """The stem conv equals a NumPy convolution with symmetric padding 3 (PyTorch's)."""
    m = resnet18(input_shape=(32, 32, 3))
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype("float32")
    stem = keras.Model(m.input, m.get_layer("stem_conv").output)
    got = keras.ops.convert_to_numpy(stem(x))
    k = keras.ops.convert_to_numpy(m.get_layer("stem_conv").kernel)
    xp = np.pad(x[0], ((3, 3), (3, 3), (0, 0)))
    ref = np.zeros((16, 16, 64))
    for i in range(16):
        for j in range(16):
            patch = xp[2 * i:2 * i + 7, 2 * j:2 * j + 7, :]
            ref[i, j] = np.tensordot(patch, k, axes=([0, 1, 2], [0, 1, 2]))
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    people = [d for d in sorted(root.iterdir()) if d.is_dir()][:5]
    rels = [f"{d.name}/{sorted(d.glob('*.jpg'))[0].name}" for d in people]
    images, ok = load_images(root, rels, size=64, progress=False)
    assert ok.all()
    return normalize_faces(images), np.arange(len(rels), dtype=np.int32)


def test_arcface_classification_model_round_trip(faces, tmp_path, fresh_process_predict):
    """Report 003's setup: ResNet34 -> 512-d -> ArcFace (s=5, m=0.1) head; reload in a fresh process."""
    x, y = faces
    keras.utils.set_random_seed(4)
    backbone = resnet34(input_shape=(64, 64, 3))
    model = classification_model(backbone, num_classes=500, head="arcface", scale=5.0, margin=0.1)
    assert [t.name for t in model.inputs] == ["image", "label"]
    head = model.get_layer("margin_head")
    assert isinstance(head, MarginHead) and head.kind == "arcface" and head.kernel.shape == (512, 500)
    assert get_embedding_model(model) is backbone
    rng = np.random.default_rng(5)
    for w in backbone.non_trainable_weights:
        low = 0.5 if "variance" in w.path else -0.1
        w.assign(rng.uniform(low, low + 0.6, w.shape).astype("float32"))
    logits = keras.ops.convert_to_numpy(model([x, y], training=False))
    emb = keras.ops.convert_to_numpy(backbone(x, training=False))
    assert logits.shape == (len(x), 500) and np.isfinite(logits).all() and np.abs(logits).max() <= 5.0 + 1e-5
    # without labels the head gives s * cos (no margin): the target logits are lower with the margin
    plain = keras.ops.convert_to_numpy(head(emb))
    assert (logits[np.arange(len(y)), y] < plain[np.arange(len(y)), y]).all()
    model_path = tmp_path / "arcface.keras"
    model.save(model_path)
    ((got, info),) = fresh_process_predict([(model_path, [x, y])])  # the backbone alone: test_backbones.py
    np.testing.assert_allclose(got, logits, rtol=1e-4, atol=1e-5)
    assert info["n_weights"] == len(model.weights) and info["name"] == model.name
    loaded = keras.saving.load_model(model_path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(get_embedding_model(loaded)(x, training=False)),
                               emb, rtol=1e-4, atol=1e-5)
    assert loaded.get_layer("margin_head").get_config() == head.get_config()
