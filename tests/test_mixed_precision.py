"""Mixed precision: layers compute in bfloat16/float16, embeddings, logits and losses stay float32.

Models are built the way the trainers build them (``Runtime.precision()`` then the build
functions of ``training/tasks/pairs.py`` and ``training/tasks/triplet_model.py``) and fed real faces from the
bundled LFW sample.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.data import load_images, open_image_source
from kerasface.layers import L2Normalize, LocalResponseNormalization
from kerasface.presets import get_pair_preset, get_triplet_preset
from kerasface.training.distribute import Runtime

SIZE = 32


@pytest.fixture(scope="module")
def faces(sample_dir):
    source = open_image_source(sample_dir)
    names = sorted(source.list_images())[:8]
    images, _ = load_images(source, names, size=SIZE, progress=False)
    x = (np.asarray(images, np.float32) - 127.5) / 128.0
    assert x.shape == (8, SIZE, SIZE, 3) and x.std() > 0.1  # real, varied pixels
    return x


def _np(t):
    return np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(t, "float32")))


@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 2e-3), ("mixed_bfloat16", 1e-2)])
def test_l2_normalize_is_finite_and_accurate_in_half_precision(policy, rtol):
    x = np.zeros((3, 512), np.float32)
    x[1] = 300.0  # float16: the squares (9e4 each) overflow
    x[2] = np.random.default_rng(0).normal(size=512) * 1e-3  # tiny, fine
    want = _np(L2Normalize()(x))
    got = L2Normalize(dtype=policy)(x)
    assert got.dtype == policy.split("_")[1]
    got = _np(got)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[0], 0.0)  # a zero vector stays zero (no NaN)
    np.testing.assert_allclose(got[1:], want[1:], rtol=rtol, atol=rtol / 10)
    np.testing.assert_allclose(np.linalg.norm(got[1:], axis=1), 1.0, rtol=rtol)


@pytest.mark.parametrize("policy, rtol", [("mixed_float16", 5e-3), ("mixed_bfloat16", 2e-2)])
def test_local_response_normalization_in_half_precision(policy, rtol):
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 16)).astype(np.float32) * 100  # float16 squares overflow
    want = _np(LocalResponseNormalization()(x))
    got = _np(LocalResponseNormalization(dtype=policy)(x))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def _dtypes(model):
    compute = {layer.compute_dtype for layer in model.layers if not hasattr(layer, "layers")}
    variables = {v.dtype for v in model.weights}
    return compute, variables


def test_pair_verifier_in_bfloat16_keeps_outputs_and_loss_float32(faces):
    from kerasface.training.tasks.pairs import build_verifier

    cfg = get_pair_preset("vargface").override(backbone="vargfacenet_tiny", image_size=SIZE,
                                               group_conv="depthwise", learning_rate=1e-3)
    rt = Runtime(mixed_precision="bfloat16")
    before = keras.mixed_precision.global_policy().name
    with rt.precision() as policy, rt.scope():
        model = build_verifier(cfg, rt)
    assert policy == "mixed_bfloat16" and keras.mixed_precision.global_policy().name == before
    backbone = model.get_layer("vargfacenet_tiny")
    compute, variables = _dtypes(backbone)
    assert "bfloat16" in compute and variables == {"float32"}  # bf16 math, float32 weights
    conv = [layer for layer in backbone.layers if "conv" in type(layer).__name__.lower()]
    assert conv and all(layer.compute_dtype == "bfloat16" for layer in conv)
    emb = backbone(faces)
    assert emb.dtype == "float32" and np.isfinite(_np(emb)).all()
    a, b = faces[:4], faces[4:]
    prob = model([a, b])
    assert prob.dtype == "float32"
    np.testing.assert_allclose(_np(prob).sum(axis=1), 1.0, rtol=1e-5)
    y = np.array([1, 0, 1, 0], np.int32)
    loss = model.compute_loss(x=[a, b], y=y, y_pred=prob)
    assert loss.dtype == "float32"
    model.run_eagerly = True  # one step: tracing the graph would cost a minute on this CPU, for the same kernels
    logs = model.train_on_batch([a, b], y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert all(v.dtype == "float32" for v in model.optimizer.variables if "iteration" not in v.path)


@pytest.mark.parametrize("mining", ["offline", "batch_hard"])
def test_triplet_models_in_bfloat16_keep_embeddings_distances_and_loss_float32(faces, mining):
    from kerasface.training.tasks.triplet_model import build_embedding_model
    from kerasface.training.tasks.triplet_model import compile_triplet as _compile

    cfg = get_triplet_preset("facenet-nn2").override(backbone="vargfacenet_tiny", image_size=SIZE,
                                                    group_conv="depthwise", mining=mining, embedding_dim=32)
    rt = Runtime(mixed_precision="bfloat16")
    with rt.precision(), rt.scope():
        embedder = build_embedding_model(cfg)
        fitted, triplet = _compile(cfg, embedder, rt)
    compute, variables = _dtypes(embedder)
    assert "bfloat16" in compute and variables == {"float32"}
    emb = embedder(faces)
    assert emb.dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(_np(emb), axis=1), 1.0, rtol=1e-5)  # L2 in float32
    stacked = triplet([faces[:3], faces[3:6], faces[5:8]])
    assert stacked.dtype == "float32" and stacked.shape == (3, 2, 1)
    if mining == "offline":
        loss = fitted.compute_loss(y=np.zeros((3, 2, 1), np.float32), y_pred=stacked)
    else:
        labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
        loss = fitted.compute_loss(y=labels, y_pred=emb)
    assert loss.dtype == "float32" and np.isfinite(_np(loss)) and float(_np(loss)) > 0


def test_float16_policy_wraps_the_optimizer_in_loss_scaling(faces):
    from kerasface.training.tasks.pairs import build_verifier

    cfg = get_pair_preset("vargface").override(backbone="vargfacenet_tiny", image_size=SIZE, group_conv="depthwise")
    rt = Runtime(mixed_precision="float16")
    with rt.precision():
        model = build_verifier(cfg, rt)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model([faces[:2], faces[2:4]]).dtype == "float32"
    assert model.get_layer("vargfacenet_tiny")(faces).dtype == "float32"
