"""Every committed loss and distance on degenerate inputs: finite value and finite gradient.

The triplet tests (test_triplet_losses.py) already cover identical embeddings, one identity,
K = 1 (no positive) and no valid triplet for the mining losses, and collapse for the stack
losses; this file adds all-zero embeddings (before and after L2 normalisation, which maps
a zero vector to zero) for every registered triplet loss, the distance layers, and the
Siamese verifier's |a - b| path with its cross-entropy on identical and zero faces.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface import losses as kl
from kerasface.layers import AbsoluteDifference, EuclideanDistance, L2Normalize, StackDistances
from kerasface.losses.online import pairwise_distances

LABEL_SETS = {
    "pk": np.array([0, 0, 1, 1, 2, 2]),
    "one_identity": np.zeros(6, int),
    "no_positive": np.arange(6),
}


def _finite(value, grad):
    return np.isfinite(float(value)) and np.isfinite(grad.numpy()).all()


@pytest.mark.parametrize("labels", list(LABEL_SETS))
@pytest.mark.parametrize("name", sorted(kl.TRIPLET_LOSSES))
def test_triplet_losses_on_zero_embeddings(name, labels):
    y = LABEL_SETS[labels]
    e = tf.Variable(np.zeros((6, 8), np.float32))
    loss = kl.get_triplet_loss(name)
    _, kw = kl.TRIPLET_LOSSES[name]
    with tf.GradientTape() as tape:
        emb = L2Normalize()(e)
        if name in ("batch_all", "batch_hard", "semi_hard"):
            value = loss(y, emb)
        else:  # stack losses: anchors, positives, negatives from the batch
            squared = kw.get("squared", False)
            dp = EuclideanDistance(squared=squared)([emb[0::2], emb[1::2]])
            dn = EuclideanDistance(squared=squared)([emb[0::2], emb[1::2][::-1]])
            value = loss(np.zeros(3), StackDistances()([dp, dn]))
    grad = tape.gradient(value, e)
    assert _finite(value, grad), (name, labels, float(value))


@pytest.mark.parametrize("squared", [False, True])
def test_distances_on_zero_and_identical_vectors(squared):
    z = tf.Variable(np.zeros((4, 8), np.float32))
    with tf.GradientTape(persistent=True) as tape:
        d_layer = EuclideanDistance(squared=squared)([z, z])
        d_pair = pairwise_distances(z, squared=squared)
        total = tf.reduce_sum(d_layer) + tf.reduce_sum(d_pair)
    assert _finite(total, tape.gradient(total, z))


def test_siamese_path_on_identical_and_zero_faces():
    """|a - b| -> Dense -> softmax cross-entropy: finite loss and gradient when a == b, also at 0."""
    dense = keras.layers.Dense(2)
    for a in (np.zeros((3, 8), np.float32), np.random.default_rng(0).standard_normal((3, 8)).astype("float32")):
        x = tf.Variable(a)
        with tf.GradientTape() as tape:
            probs = keras.activations.softmax(dense(AbsoluteDifference()([x, x * 1.0])))
            value = keras.losses.SparseCategoricalCrossentropy()(np.array([1, 0, 1]), probs)
        assert _finite(value, tape.gradient(value, x))


# --- margin-softmax heads and the angular prototypical loss (reports 001/003) -----------------------------


def _head_loss_and_grad(kind, emb, labels, head=None):
    from kerasface.models.heads import MarginHead

    head = head or MarginHead(4, kind=kind, margin=0.5 if kind == "arcface" else 0.2)
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        logits = head(x, labels) if kind != "softmax" else head(x)
        value = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    return head, value, tape.gradient(value, [x, head.kernel])


@pytest.mark.parametrize("kind", ["softmax", "normalized", "cosface", "amsoftmax", "arcface"])
def test_margin_heads_on_zero_identical_and_one_class_batches(kind):
    labels = np.zeros(4, dtype=np.int64)                      # one identity in the batch
    head, value, (gx, gw) = _head_loss_and_grad(kind, np.zeros((4, 8), np.float32), labels)
    assert np.isfinite(float(value)) and np.isfinite(gx.numpy()).all() and np.isfinite(gw.numpy()).all()
    # embeddings exactly on their class centre: cos = 1, where d/dx acos is infinite without care
    w = keras.ops.convert_to_numpy(head.kernel)[:, 0]
    same = np.tile(w / np.linalg.norm(w), (4, 1)).astype(np.float32)
    _, value, (gx, gw) = _head_loss_and_grad(kind, same, labels, head)
    assert np.isfinite(float(value)) and np.isfinite(gx.numpy()).all() and np.isfinite(gw.numpy()).all()


@pytest.mark.parametrize("case", ["zero", "identical"])
def test_angular_prototypical_loss_on_degenerate_embeddings(case):
    from kerasface.losses import AngularPrototypicalLoss

    emb = np.zeros((3, 2, 8), np.float32) if case == "zero" else np.ones((3, 2, 8), np.float32)
    layer = AngularPrototypicalLoss()
    x = tf.Variable(emb)
    with tf.GradientTape() as tape:
        value = layer(x)
    grads = tape.gradient(value, [x, *layer.trainable_variables])
    assert np.isfinite(float(value)) and all(np.isfinite(g.numpy()).all() for g in grads)
