"""How a model is evaluated, resolved once: :class:`EvalSettings` (plain Python, no TensorFlow).

Every scoring function of :mod:`kerasface.evaluation` takes one ``EvalSettings``
(and the image source, opened once by the public entry point) instead of a
dozen keyword arguments threaded from call to call. The public functions still
accept the settings as keywords (``score_pairs(model, data, pairs, flip=True)``):
they build the object once, with :meth:`EvalSettings.of`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["METRICS", "NORMALIZATIONS", "ON_MISSING", "EvalSettings"]

#: Pixel normalisations a model may expect. ``kerasface``: every model of this
#: package, ``(x - 127.5) / 128`` (:func:`kerasface.ops.normalize_faces`); ``unit``: ``x / 255``;
#: ``raw``: ``x`` as 0..255 floats.
NORMALIZATIONS = ("kerasface", "unit", "raw")

#: Pair comparison for embedding models. Distances are scored as ``-d``.
METRICS = {
    "cosine": "cosine similarity of the L2-normalised embeddings (higher = same)",
    "l2": "euclidean distance between the L2-normalised embeddings (lower = same)",
    "l2sq": "squared euclidean distance between the L2-normalised embeddings (lower = same)",
}

#: What to do with a pair whose image is not in the source (:func:`kerasface.data.lfw.resolve_pairs`).
ON_MISSING = ("skip", "error")


@dataclass(frozen=True)
class EvalSettings:
    """Everything that decides how faces are read, fed to a model and compared.

    Attributes:
        image_size: side of the square model input; ``None``: the model's own (required when the model
            accepts any size).
        center_crop: fraction of the shorter image side kept (centred) before resizing.
        normalization: one of :data:`NORMALIZATIONS`.
        flip: flip test-time augmentation (embeddings of image and mirror summed; a verifier's
            probabilities of pair and mirrored pair averaged).
        metric: one of :data:`METRICS` (embedding models only).
        low_light_seed: darken every image with :func:`~kerasface.data.lowlight.low_light` keyed by
            its stable id (the low-light experiment's fixed dark set); ``None``: off.
        batch_size: images (or pairs) per model call.
        on_missing: one of :data:`ON_MISSING`.
        l2_normalize: L2-normalise embeddings without flip (with flip they always are).
        verbose: passed to ``model.predict`` (its progress bar).
    """

    image_size: int | None = None
    center_crop: float = 1.0
    normalization: str = "kerasface"
    flip: bool = False
    metric: str = "cosine"
    low_light_seed: int | None = None
    batch_size: int = 64
    on_missing: str = "skip"
    l2_normalize: bool = True
    verbose: Any = "auto"

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be 'skip' or 'error', got {self.on_missing!r}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")

    @classmethod
    def of(cls, settings: EvalSettings | None = None, **changes) -> EvalSettings:
        """``settings`` (default: the defaults) with ``changes`` applied; unknown names are an error."""
        base = settings if settings is not None else cls()
        unknown = set(changes) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown evaluation setting(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(base, **changes) if changes else base

    def report(self) -> dict:
        """The settings a metrics file records (how the faces were prepared)."""
        return {"center_crop": self.center_crop, "normalization": self.normalization, "flip": self.flip,
                "low_light_seed": self.low_light_seed}
