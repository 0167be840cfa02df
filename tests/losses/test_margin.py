"""MarginHead (softmax / normalized / CosFace = AM-softmax / ArcFace) against NumPy loops.

References are float64 loops over samples and classes, independent of the
package code. The |cos| = 1 boundary (an embedding parallel or antiparallel to
a class weight) must give finite logits and gradients; the ArcFace fallback
branch (theta + m > pi) and easy margin are exercised on purpose.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import margin_logits
from kerasface.models import MarginHead, classification_model, get_embedding_model

KINDS = ("softmax", "normalized", "cosface", "amsoftmax", "arcface")


def ref_logits(emb, kernel, bias, labels, kind, s, m, easy_margin=False):
    emb = np.asarray(emb, np.float64)
    kernel = np.asarray(kernel, np.float64)
    n, c = len(emb), kernel.shape[1]
    out = np.zeros((n, c))
    for i in range(n):
        for j in range(c):
            if kind == "softmax":
                out[i, j] = sum(emb[i, k] * kernel[k, j] for k in range(emb.shape[1])) + bias[j]
                continue
            ne = math.sqrt(max(sum(v * v for v in emb[i]), 1e-12))
            nw = math.sqrt(max(sum(kernel[k, j] ** 2 for k in range(kernel.shape[0])), 1e-12))
            cos = sum(emb[i, k] * kernel[k, j] for k in range(emb.shape[1])) / (ne * nw)
            cos = min(1.0, max(-1.0, cos))
            if labels is not None and j == labels[i] and kind in ("cosface", "amsoftmax"):
                cos = cos - m
            elif labels is not None and j == labels[i] and kind == "arcface":
                theta = math.acos(cos)
                if easy_margin:
                    cos = math.cos(theta + m) if cos > 0 else cos
                elif theta + m <= math.pi:
                    cos = math.cos(theta + m)
                else:
                    cos = cos - m * math.sin(m)
            out[i, j] = s * cos
    return out


def make_head(kind, emb_dim, classes, seed=0, **kw):
    head = MarginHead(classes, kind=kind, **kw)
    head.build((None, emb_dim))
    rng = np.random.default_rng(seed)
    head.kernel.assign(rng.standard_normal((emb_dim, classes)).astype("float32"))
    if head.bias is not None:
        head.bias.assign(rng.standard_normal(classes).astype("float32"))
    return head


def grads(head, emb, labels):
    emb = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        logits = head(emb, labels=labels)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    g_emb, g_kernel = tape.gradient(loss, [emb, head.kernel])
    return logits.numpy(), loss.numpy(), g_emb.numpy(), g_kernel.numpy()


@pytest.mark.parametrize("kind,s,m", [("softmax", 1.0, 0.0), ("normalized", 16.0, 0.0), ("cosface", 30.0, 0.1),
                                      ("amsoftmax", 30.0, 0.35), ("arcface", 5.0, 0.1), ("arcface", 64.0, 0.5)])
def test_logits_match_numpy(kind, s, m):
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((12, 8)).astype("float32")
    labels = rng.integers(0, 5, 12).astype("int32")
    head = make_head(kind, 8, 5, scale=s, margin=m)
    bias = keras.ops.convert_to_numpy(head.bias) if head.bias is not None else None
    kernel = keras.ops.convert_to_numpy(head.kernel)
    got = keras.ops.convert_to_numpy(head(emb, labels=labels))
    np.testing.assert_allclose(got, ref_logits(emb, kernel, bias, labels, kind, s, m), rtol=1e-4, atol=1e-4)
    # without labels: no margin (inference logits)
    plain = keras.ops.convert_to_numpy(head(emb))
    np.testing.assert_allclose(plain, ref_logits(emb, kernel, bias, None, kind, s, m), rtol=1e-4, atol=1e-4)


def test_amsoftmax_is_cosface_and_labels_shape():
    rng = np.random.default_rng(2)
    emb = rng.standard_normal((6, 4)).astype("float32")
    labels = rng.integers(0, 3, 6)
    a, b = make_head("amsoftmax", 4, 3), make_head("cosface", 4, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a(emb, labels=labels)),
                                  keras.ops.convert_to_numpy(b(emb, labels=labels[:, None])))


def boundary_batch(kernel):
    """Embeddings at cos = +1 and cos = -1 with their own class weight (and a zero vector)."""
    w = kernel.T
    emb = np.stack([w[0], -w[1], 3 * w[2], -0.5 * w[0], w[1] * 1e-3, np.zeros_like(w[0])]).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2], "int32")
    return emb, labels


@pytest.mark.parametrize("kind,easy", [("softmax", False), ("normalized", False), ("cosface", False),
                                       ("arcface", False), ("arcface", True)])
def test_finite_values_and_gradients_at_abs_cos_one(kind, easy):
    head = make_head(kind, 6, 3, seed=3, scale=30.0, margin=0.5, easy_margin=easy)
    emb, labels = boundary_batch(keras.ops.convert_to_numpy(head.kernel))
    logits, loss, g_emb, g_kernel = grads(head, emb, labels)
    assert np.isfinite(logits).all() and np.isfinite(loss)
    assert np.isfinite(g_emb).all() and np.isfinite(g_kernel).all()
    if kind == "softmax":
        return
    kernel = keras.ops.convert_to_numpy(head.kernel)
    ref = ref_logits(emb, kernel, None, labels, kind, 30.0, 0.5, easy)
    # ArcFace's sin(theta) = sqrt(1 - cos^2) is ill-conditioned at |cos| = 1: a float32 cosine a few ulp
    # below 1 (say 1 - 2.4e-7, where float64 gives exactly 1) has sin = 7e-4, which moves the logit by
    # s * sin(m) * 7e-4 ~ 0.01. Bound that rounding (8 ulp of cos) instead of a fixed 2e-3, which
    # held or failed with the CPU's summation order; a wrong margin would still be off by > 1.
    atol = 30.0 * math.sin(0.5) * math.sqrt(2 * 8 * np.finfo(np.float32).eps) if kind == "arcface" else 2e-3
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=atol)


def test_arcface_branches():
    """cos(theta + m) for theta + m <= pi; cos - m sin m beyond; easy margin: cos where cos <= 0."""
    s, m = 10.0, 0.5
    cos = np.array([[1.0, -1.0, 0.9, 0.0, -0.5, math.cos(math.pi - m) + 1e-3, math.cos(math.pi - m) - 1e-3, -0.95]],
                   "float32").T  # one class: every row's target
    labels = np.zeros(len(cos), "int32")
    got = keras.ops.convert_to_numpy(margin_logits(cos, labels, "arcface", s, m))[:, 0]
    theta = np.arccos(cos[:, 0].astype(np.float64))
    want = np.where(theta + m <= math.pi, np.cos(theta + m), cos[:, 0] - m * math.sin(m)) * s
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-4)
    assert got[1] == pytest.approx(s * (-1.0 - m * math.sin(m)), abs=1e-5)  # fallback at cos = -1
    assert got[6] == pytest.approx(s * (cos[6, 0] - m * math.sin(m)), abs=1e-5)
    easy = keras.ops.convert_to_numpy(margin_logits(cos, labels, "arcface", s, m, easy_margin=True))[:, 0]
    want_easy = np.where(cos[:, 0] > 0, np.cos(theta + m), cos[:, 0]) * s
    np.testing.assert_allclose(easy, want_easy, rtol=1e-5, atol=5e-4)
    # the target logit never increases with theta (no rise past theta + m = pi)
    grid = np.cos(np.linspace(0, math.pi, 2001)).astype("float32")[:, None]
    vals = keras.ops.convert_to_numpy(margin_logits(grid, np.zeros(len(grid), "int32"), "arcface", 1.0, m))[:, 0]
    assert (np.diff(vals) <= 1e-6).all()
    # gradient with respect to cos is finite everywhere on the grid, including both ends
    c = tf.constant(grid)
    with tf.GradientTape() as tape:
        tape.watch(c)
        out = tf.reduce_sum(margin_logits(c, np.zeros(len(grid), "int32"), "arcface", 1.0, m))
    assert np.isfinite(tape.gradient(out, c).numpy()).all()


def test_config_round_trip_and_errors():
    head = MarginHead(10, kind="arcface", scale=5.0, margin=0.1, easy_margin=True, name="h")
    clone = MarginHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert keras.saving.get_registered_name(MarginHead) == "kerasface>MarginHead"
    with pytest.raises(ValueError, match="kind"):
        MarginHead(10, kind="sphereface")
    with pytest.raises(ValueError, match="margin"):
        MarginHead(10, kind="arcface", margin=2.0)


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    people = [d for d in sorted(root.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= 3][:4]
    rels, labels = [], []
    for i, d in enumerate(people):
        for p in sorted(d.glob("*.jpg"))[:3]:
            rels.append(f"{d.name}/{p.name}")
            labels.append(i)
    images, ok = load_images(root, rels, size=32, progress=False)
    assert ok.all()
    return (images.astype(np.float32) - 127.5) / 128.0, np.array(labels, "int32")


@pytest.mark.parametrize("kind,s,m", [("cosface", 30.0, 0.1), ("arcface", 5.0, 0.1)])
def test_training_on_real_faces(faces, kind, s, m):
    """A small backbone + head fits 12 LFW faces of 4 people: the loss falls and stays finite."""
    x, y = faces
    keras.utils.set_random_seed(7)
    backbone = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16)], name="tiny")
    model = classification_model(backbone, 4, head=kind, scale=s, margin=m)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    hist = model.fit([x, y], y, epochs=15, batch_size=12, verbose=0).history["loss"]
    assert np.isfinite(hist).all() and hist[-1] < hist[0]
    assert get_embedding_model(model) is backbone


def test_logits_float32_under_mixed_precision():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        backbone = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)], name="mp")
        model = classification_model(backbone, 3, head="arcface", scale=64.0, margin=0.5)
        assert model.get_layer("margin_head").compute_dtype == "float32"
        assert backbone.layers[0].compute_dtype == "float16"
        x = np.random.default_rng(0).standard_normal((4, 8)).astype("float32")
        out = model([x, np.array([0, 1, 2, 0])])
        assert out.dtype == "float32" and np.isfinite(keras.ops.convert_to_numpy(out)).all()
    finally:
        keras.config.set_dtype_policy(old)
