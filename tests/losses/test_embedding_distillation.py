"""embedding_distillation_loss against a NumPy reference; finite gradients at a zero embedding; the
DistillationModel term with precomputed teacher embeddings (no teacher, no labels)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import embedding_distillation_loss
from kerasface.models import DistillationModel


def np_reference(s, t, metric, w=None):
    """Per sample with a loop: unit vectors, then 1 - dot or the squared distance."""
    out = []
    for a, b in zip(np.asarray(s, np.float64), np.asarray(t, np.float64)):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        ua = a / na if na > 0 else a
        ub = b / nb if nb > 0 else b
        out.append(1.0 - float(ua @ ub) if metric == "cosine" else float(((ua - ub) ** 2).sum()))
    out = np.array(out)
    if w is not None:
        out = out * np.asarray(w, np.float64)
    return out.mean()


def value_and_grad(fn, s, t):
    xs = [tf.Variable(np.asarray(a, np.float32)) for a in (s, t)]
    with tf.GradientTape() as tape:
        out = fn(*[tf.identity(x) for x in xs])
    gs, gt = tape.gradient(out, xs)
    return float(out), gs.numpy(), gt


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_matches_numpy(metric):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(6, 5)).astype(np.float32) * 3.0
    t = rng.normal(size=(6, 5)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, size=6).astype(np.float32)
    got = float(embedding_distillation_loss(s, t, metric))
    np.testing.assert_allclose(got, np_reference(s, t, metric), rtol=1e-5)
    np.testing.assert_allclose(float(embedding_distillation_loss(s, t, metric, sample_weight=w)),
                               np_reference(s, t, metric, w), rtol=1e-5)
    # the norms do not matter, only the directions
    np.testing.assert_allclose(float(embedding_distillation_loss(5.0 * s, 0.1 * t, metric)), got, rtol=1e-5)


def test_l2_is_twice_cosine_and_zero_when_aligned():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(2, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(float(embedding_distillation_loss(s, t, "l2")),
                               2.0 * float(embedding_distillation_loss(s, t, "cosine")), rtol=1e-5)
    assert float(embedding_distillation_loss(3.0 * t, t, "cosine")) == pytest.approx(0.0, abs=1e-6)
    assert float(embedding_distillation_loss(-t, t, "cosine")) == pytest.approx(2.0, abs=1e-6)
    with pytest.raises(ValueError, match="metric"):
        embedding_distillation_loss(s, t, "dot")


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_gradient_matches_numpy_and_teacher_is_constant(metric):
    rng = np.random.default_rng(2)
    s = rng.normal(size=(3, 4)).astype(np.float32)
    t = rng.normal(size=(3, 4)).astype(np.float32)
    _, gs, gt = value_and_grad(lambda a, b: embedding_distillation_loss(a, b, metric), s, t)
    assert gt is None or not np.asarray(gt).any()
    eps, num = 1e-3, np.zeros_like(s, np.float64)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            d = np.zeros_like(s)
            d[i, j] = eps
            num[i, j] = (np_reference(s + d, t, metric) - np_reference(s - d, t, metric)) / (2 * eps)
    np.testing.assert_allclose(gs, num, atol=2e-3)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_zero_embedding_gives_finite_gradient(metric):
    s = np.zeros((4, 6), np.float32)
    t = np.tile(np.arange(1.0, 7.0, dtype=np.float32), (4, 1))
    loss, gs, _ = value_and_grad(lambda a, b: embedding_distillation_loss(a, b, metric), s, t)
    assert loss == pytest.approx(1.0, abs=1e-6)  # a zero row normalises to zero: 1 - 0, or |0 - t|^2 = 1
    assert np.isfinite(gs).all() and np.abs(gs).max() > 0  # and it pushes towards the teacher
    loss0, g0, _ = value_and_grad(lambda a, b: embedding_distillation_loss(a, b, metric), s, s)  # both zero
    assert np.isfinite(loss0) and np.isfinite(g0).all()


def tiny_backbone(dim, name):
    x = keras.Input((16, 16, 3))
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name=f"{name}_conv")(x))
    return keras.Model(x, keras.layers.Dense(dim, name=f"{name}_emb")(y), name=name)


def test_model_term_reads_precomputed_teacher_embeddings_without_labels():
    keras.utils.set_random_seed(0)
    model = DistillationModel(tiny_backbone(12, "stu"), num_classes=3, ce_weight=0.0, embedding_distill_weight=2.0,
                              embedding_distill_metric="l2", teacher_embedding_dim=5)
    assert model.distill_projection is not None and model.distill_projection.units == 5
    assert not model.classifier.trainable  # no term reads the logits
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, size=(4, 16, 16, 3)).astype(np.float32)
    targets = rng.normal(size=(4, 5)).astype(np.float32)
    x = {"image": images, "teacher_embedding": targets}  # no labels
    logits = model(x)
    loss = float(model.compute_loss(x, y_pred=logits))
    projected = keras.ops.convert_to_numpy(model.distill_projection(model.backbone(images)))
    np.testing.assert_allclose(loss, 2.0 * np_reference(projected, targets, "l2"), rtol=1e-5)
    with pytest.raises(ValueError, match="teacher"):
        DistillationModel(tiny_backbone(12, "s2"), num_classes=3, embedding_distill_weight=1.0)
    with pytest.raises(ValueError, match="labels"):
        plain = DistillationModel(tiny_backbone(5, "s3"), num_classes=3, embedding_distill_weight=1.0,
                                  teacher_embedding_dim=5)
        plain.compute_loss({"image": images, "teacher_embedding": targets})
    # config round trip keeps the new settings
    again = DistillationModel.from_config(model.get_config())
    assert again.embedding_distill_metric == "l2" and again.teacher_embedding_dim == 5
    assert again.term_weights["embedding_distill"] == 2.0


def test_model_term_runs_an_embedding_only_teacher():
    keras.utils.set_random_seed(1)
    teacher = tiny_backbone(5, "teach")
    model = DistillationModel(tiny_backbone(5, "stu2"), num_classes=3, teacher=teacher, ce_weight=0.0,
                              embedding_distill_weight=1.0)
    images = np.random.default_rng(4).uniform(-1, 1, size=(4, 16, 16, 3)).astype(np.float32)
    loss = float(model.compute_loss({"image": images}, y_pred=model({"image": images})))
    ref = np_reference(keras.ops.convert_to_numpy(model.backbone(images)),
                       keras.ops.convert_to_numpy(teacher(images)), "cosine")
    np.testing.assert_allclose(loss, ref, rtol=1e-5)
    with pytest.raises(ValueError, match="logits"):
        DistillationModel(tiny_backbone(5, "stu3"), num_classes=3, teacher=teacher, soft_ce_weight=1.0)
