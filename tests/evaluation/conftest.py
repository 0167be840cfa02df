"""Fixtures shared by the evaluation tests: a tiny embedding model and the bundled sample's validation pairs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_embedder():
    """``build(seed=0, size=32, name="tiny_embedder")``: Conv 3x3/2 (8, ReLU) -> global average pooling ->
    Dense(16) named ``embedding``, on ``size`` x ``size`` faces, its weights drawn from ``seed``."""
    import keras

    def build(seed: int = 0, size: int = 32, name: str = "tiny_embedder") -> keras.Model:
        keras.utils.set_random_seed(seed)
        x = keras.Input((size, size, 3), name="image")
        h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(x)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        return keras.Model(x, keras.layers.Dense(16, name="embedding")(h), name=name)

    return build


@pytest.fixture(scope="session")
def val_pairs(sample_dir):
    """The 60 pairs of the bundled sample's ``pairsVal.txt`` (30 same, 30 different)."""
    from kerasface.data import parse_pairs

    return parse_pairs(sample_dir / "pairsVal.txt")
