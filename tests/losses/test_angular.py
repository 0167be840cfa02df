"""Angular prototypical loss (report 001) against a NumPy loop reference.

Checks M = 2, 3, 4 in both input layouts, finiteness of value and gradient for
identical and zero embeddings, that the scale w stays positive when gradient
steps push it down hard, training on real LFW faces, and a fresh-process
``.keras`` round trip of a model holding the layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import AngularPrototypicalLogits, AngularPrototypicalLoss

LFW_TINY = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lfw_tiny" / "images"


def ref_loss(emb, w, b, eps=1e-12):
    """emb [N, M, D]: prototype = mean of the first M - 1, query = last; CE against i."""
    emb = np.asarray(emb, np.float64)
    n, m, d = emb.shape
    protos = [[sum(emb[i, k, t] for k in range(m - 1)) / (m - 1) for t in range(d)] for i in range(n)]
    logits = np.zeros((n, n))
    for i in range(n):
        q = emb[i, m - 1]
        nq = math.sqrt(max(sum(v * v for v in q), eps))
        for j in range(n):
            p = protos[j]
            npr = math.sqrt(max(sum(v * v for v in p), eps))
            logits[i, j] = w * sum(q[t] * p[t] for t in range(d)) / (nq * npr) + b
    total = 0.0
    for i in range(n):
        mx = max(logits[i])
        total += mx + math.log(sum(math.exp(v - mx) for v in logits[i])) - logits[i, i]
    return logits, total / n


def loss_and_grads(layer, emb):
    emb = tf.constant(emb)
    with tf.GradientTape() as tape:
        tape.watch(emb)
        loss = layer(emb)
    g = tape.gradient(loss, [emb, layer.w_raw, layer.b])
    return loss.numpy(), [v.numpy() for v in g]


@pytest.mark.parametrize("m", [2, 3, 4])
def test_matches_numpy_reference(m):
    rng = np.random.default_rng(m)
    emb = rng.standard_normal((5, m, 7)).astype("float32")
    layer = AngularPrototypicalLoss(init_w=10.0, init_b=-5.0)
    got = float(layer(emb))
    ref_logits, ref = ref_loss(emb, 10.0, -5.0)
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.logits(emb)), ref_logits, rtol=1e-5, atol=1e-5)
    # flat [N * M, D], identity-major, with num_per_class = M: the same loss
    flat = AngularPrototypicalLoss(num_per_class=m)
    assert float(flat(emb.reshape(5 * m, 7))) == pytest.approx(ref, rel=1e-5, abs=1e-5)
    logits_layer = AngularPrototypicalLogits(num_per_class=m)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits_layer(emb.reshape(5 * m, 7))), ref_logits,
                               rtol=1e-5, atol=1e-5)
    # other w and b
    other = AngularPrototypicalLoss(init_w=3.0, init_b=1.5)
    assert float(other(emb)) == pytest.approx(ref_loss(emb, 3.0, 1.5)[1], rel=1e-5, abs=1e-5)


def test_initial_weights_and_errors():
    layer = AngularPrototypicalLoss(init_w=10.0, init_b=-5.0)
    layer.build((4, 2, 3))
    assert float(layer.w) == pytest.approx(10.0, rel=1e-6) and float(layer.b) == -5.0
    assert len(layer.trainable_weights) == 2
    with pytest.raises(ValueError, match="M >= 2"):
        layer(np.zeros((3, 1, 4), "float32"))
    with pytest.raises(ValueError, match="num_per_class"):
        AngularPrototypicalLoss()(np.zeros((6, 4), "float32"))
    with pytest.raises(ValueError, match="num_per_class"):
        AngularPrototypicalLoss(num_per_class=1)
    with pytest.raises(ValueError, match="init_w"):
        AngularPrototypicalLoss(init_w=0.0)


def _zero_prototype(one, rng, m):
    """Support embeddings whose mean is the zero vector (one zero row, or +v and -v), random queries."""
    support = np.zeros((4, m - 1, 6), "float32")
    if m > 2:
        support[:, 0], support[:, 1] = one, -one
    return np.concatenate([support, rng.standard_normal((4, 1, 6)).astype("float32")], axis=1)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_finite_gradients_identical_and_zero(m):
    rng = np.random.default_rng(0)
    one = rng.standard_normal(6).astype("float32")
    cases = {
        "identical": np.broadcast_to(one, (4, m, 6)).copy(),
        "zeros": np.zeros((4, m, 6), "float32"),
        "zero_query": rng.standard_normal((4, m, 6)).astype("float32") * np.array([1] * (m - 1) + [0])[None, :, None],
        "zero_prototype": _zero_prototype(one, rng, m),
    }
    for name, emb in cases.items():
        layer = AngularPrototypicalLoss()
        loss, g = loss_and_grads(layer, emb.astype("float32"))
        assert np.isfinite(loss), name
        assert all(np.isfinite(v).all() for v in g), name
    # identical embeddings: every logit is w + b, so the loss is log N
    assert float(AngularPrototypicalLoss()(cases["identical"])) == pytest.approx(math.log(4), rel=1e-5)


def test_scale_stays_positive_when_pushed_negative():
    """Queries look like the wrong prototypes: lowering w lowers the loss, without bound at w < 0."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal((4, 8)).astype("float32")
    emb = np.stack([np.stack([base[i], base[i], -base[i]]) for i in range(4)])  # query opposite its prototype
    layer = AngularPrototypicalLoss(init_w=10.0, init_b=-5.0)
    layer.build(emb.shape)
    opt = keras.optimizers.SGD(learning_rate=50.0)
    ws = [float(layer.w)]
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = layer(emb)
        opt.apply_gradients(zip(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights))
        ws.append(float(layer.w))
    assert ws[-1] < 1.0 < ws[0]  # it was pushed down ...
    assert min(ws) > 0 and np.isfinite(ws).all()  # ... and never crossed zero
    layer.w_raw.assign(-1e4)  # even an absurd raw value keeps w positive
    assert float(layer.w) > 0


def test_config_round_trip():
    layer = AngularPrototypicalLogits(num_per_class=3, init_w=7.0, init_b=-2.0, name="ap")
    clone = AngularPrototypicalLogits.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(AngularPrototypicalLoss) == "kerasface>AngularPrototypicalLoss"


def _faces(root, people, m, size=32):
    from kerasface.data import load_images

    rels = [f"{d.name}/{p.name}" for d in people for p in sorted(d.glob("*.jpg"))[:m]]
    images, ok = load_images(root, rels, size=size, progress=False)
    assert ok.all()
    return (images.astype(np.float32) - 127.5) / 128.0


def _tiny_backbone():
    return keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16)], name="tiny")


def test_train_and_round_trip_on_bundled_faces(sample_dir, tmp_path, fresh_process_predict):
    """N = 4 people x M = 3 bundled LFW faces: fit lowers the loss; the saved model reloads in a fresh process."""
    root = sample_dir / "lfw"
    people = [d for d in sorted(root.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= 3][:4]
    x = _faces(root, people, 3)
    keras.utils.set_random_seed(11)
    images = keras.Input((32, 32, 3), name="image")
    logits = AngularPrototypicalLogits(num_per_class=3, name="ap")(_tiny_backbone()(images))
    model = keras.Model(images, logits)
    y = np.arange(4)
    model.compile(keras.optimizers.Adam(0.02), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # one batch = the whole N x M block (the row order carries the identity); y = arange(N)
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(20)
    hist = model.fit(ds, shuffle=False, verbose=0).history["loss"]
    want = keras.ops.convert_to_numpy(model(x))
    emb = keras.ops.convert_to_numpy(model.layers[1](x))
    ap = model.get_layer("ap")
    assert np.isfinite(hist).all() and float(ap.w) > 0 and float(ap.w) != pytest.approx(10.0)
    ref_logits, ref = ref_loss(emb.reshape(4, 3, -1), float(ap.w), float(ap.b))
    np.testing.assert_allclose(want, ref_logits, rtol=1e-4, atol=1e-4)
    path = tmp_path / "ap.keras"
    model.save(path)
    ((got, info),) = fresh_process_predict([(path, [x])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert info["n_weights"] == len(model.weights)


@pytest.mark.skipif(not LFW_TINY.is_dir(), reason=f"lfw_tiny not available at {LFW_TINY}")
@pytest.mark.parametrize("m", [2, 4])
def test_lfw_tiny_faces_match_reference(m):
    people = sorted(d for d in LFW_TINY.iterdir() if d.is_dir())[:6]
    x = _faces(LFW_TINY, people, m)
    keras.utils.set_random_seed(12)
    emb = keras.ops.convert_to_numpy(_tiny_backbone()(x)).reshape(len(people), m, -1)
    layer = AngularPrototypicalLoss(num_per_class=m)
    loss, g = loss_and_grads(layer, emb.reshape(len(people) * m, -1))
    assert loss == pytest.approx(ref_loss(emb, 10.0, -5.0)[1], rel=1e-5, abs=1e-5)
    assert all(np.isfinite(v).all() for v in g)
