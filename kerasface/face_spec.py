"""What a face model needs to be fed, and how its outputs are compared: :class:`FaceSpec`.

A model that only a training run's ``config.json`` can explain is a silent mismatch
waiting to happen (unaligned crops fed to a model trained on aligned ones, or
pixels scaled the wrong way). A ``FaceSpec`` says it once, in plain data:

- ``image_size``: ``(height, width)`` of the face crops the model takes;
- ``alignment``: how the crops are made from a photo (:data:`ALIGNMENTS`);
- ``center_crop``: for ``alignment="none"``, the centred fraction of the shorter side kept;
- ``input_scaling``: what the model's input expects (:data:`INPUT_SCALINGS`); ``"in-model"``
  means the model takes RGB 0..255 values (uint8 or float) and scales them itself
  (its first layer is :class:`kerasface.layers.FacePreprocessing`);
- ``metric``: how two embeddings are compared (``cosine`` similarity or ``l2`` distance);
- ``threshold`` and ``threshold_source``: the decision threshold shipped with the model
  (same person when ``cosine >= threshold`` or ``l2 <= threshold``) and where it came from.

Plain Python (no TensorFlow): floor 0 of the package, read by the models, the
data pipelines, the evaluation and the command line alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ALIGNMENTS", "DEFAULT_MODEL", "INPUT_SCALINGS", "SPEC_METRICS", "FaceSpec"]

#: The model ``kerasface verify`` / ``embed`` / ``find`` (and ``kerasface.verify``...) use when none is named.
DEFAULT_MODEL = "dlib-resnet-v1"

#: ``mtcnn``: MTCNN's five points warped onto kerasface's ArcFace template (``kerasface align``);
#: ``dlib``: five points warped onto dlib's face-chip geometry (the dlib ResNet's 150x150 chips);
#: ``none``: a centred crop of the photo (LFW-style photos, as the LFW trainers read them).
ALIGNMENTS = ("mtcnn", "dlib", "none")

#: ``kerasface``: ``(x - 127.5) / 128`` (:func:`kerasface.ops.normalize_faces`), ``unit``: ``x / 255``,
#: ``raw``: 0..255 floats, ``in-model``: the model scales its 0..255 input itself.
INPUT_SCALINGS = ("kerasface", "unit", "raw", "in-model")

SPEC_METRICS = ("cosine", "l2")


@dataclass(frozen=True)
class FaceSpec:
    image_size: tuple[int, int]
    alignment: str = "none"
    center_crop: float = 1.0
    input_scaling: str = "kerasface"
    metric: str = "cosine"
    threshold: float | None = None
    threshold_source: str | None = None

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, int):
            size = (size, size)
        size = tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"image_size must be (height, width) of positive ints, got {self.image_size!r}")
        object.__setattr__(self, "image_size", size)
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.input_scaling not in INPUT_SCALINGS:
            raise ValueError(f"input_scaling must be one of {INPUT_SCALINGS}, got {self.input_scaling!r}")
        if self.metric not in SPEC_METRICS:
            raise ValueError(f"metric must be one of {SPEC_METRICS}, got {self.metric!r}")
        if not (0.0 < float(self.center_crop) <= 1.0):
            raise ValueError(f"center_crop must be in (0, 1], got {self.center_crop!r}")
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> FaceSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown face-spec field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def replace(self, **changes) -> FaceSpec:
        return dataclasses.replace(self, **changes)

    def same(self, score: float) -> bool:
        """Whether ``score`` (a cosine similarity or an l2 distance, per :attr:`metric`) says same person."""
        if self.threshold is None:
            raise ValueError("this face spec carries no threshold")
        return score >= self.threshold if self.metric == "cosine" else score <= self.threshold
