"""Non-learned baselines that give the verification numbers a floor.

``raw_pixels(size)`` is an "embedding model" whose embedding is the image
itself, flattened: cosine similarity of two faces' normalised pixel vectors
(``(x - 127.5) / 128``). It goes through exactly the same evaluation code as a
trained model (``kerasface evaluate raw-pixels ...``).
"""

from __future__ import annotations

import keras

__all__ = ["BASELINES", "raw_pixels"]


def raw_pixels(size: int = 64, name: str = "raw_pixels") -> keras.Model:
    """``size`` x ``size`` x 3 image -> its ``3 * size**2`` pixel values (built-in layers only)."""
    inputs = keras.Input((size, size, 3), name="image")
    return keras.Model(inputs, keras.layers.Flatten(name="pixels")(inputs), name=name)


#: Names accepted in place of a model path by ``kerasface evaluate``.
BASELINES = {"raw-pixels": raw_pixels}
