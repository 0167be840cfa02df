"""Siamese verifier of report 000: shared backbone, |f1 - f2|, Dense(64), softmax(2)."""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import AbsoluteDifference

__all__ = ["SiameseVerifier"]


def SiameseVerifier(backbone: keras.Model, hidden_units=64, dropout=0.5, name="siamese_verifier"):
    """Two faces -> probabilities ``[different, same]``.

    Both faces go through the *same* ``backbone`` (shared weights); the absolute
    difference of their embeddings passes dropout, ``Dense(hidden_units, relu)``,
    dropout again and a 2-unit softmax (report 000: "dropout(0.5) twice").
    The output is float32 whatever the compute dtype.
    """
    shape = tuple(backbone.input_shape[1:])
    face_a = keras.Input(shape=shape, name="face_a")
    face_b = keras.Input(shape=shape, name="face_b")
    diff = AbsoluteDifference(name="abs_diff")([backbone(face_a), backbone(face_b)])
    x = layers.Dropout(dropout, name="dropout1")(diff)
    x = layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    out = layers.Dense(2, activation="softmax", dtype="float32", name="same_prob")(x)
    return keras.Model([face_a, face_b], out, name=name)
