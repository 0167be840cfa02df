"""From a photo to the face crops a model takes, the way its :class:`~kerasface.face_spec.FaceSpec` says.

* ``alignment="mtcnn"``: MTCNN finds the faces; each chosen face is warped so its five points land on
  kerasface's ArcFace template at the model's size (what ``kerasface align`` writes);
* ``alignment="dlib"``: the same five points warped onto dlib's face-chip geometry (the dlib ResNet's chips);
* ``alignment="none"``: no detection; the centred ``center_crop`` fraction of the shorter side, resized
  (what the LFW trainers read).

:func:`read_photo` decodes a path (or takes an array) into uint8 RGB; :func:`face_crops` returns the
chosen face(s) as :class:`FaceCrop` (crop, box, landmarks, detector confidence); :func:`detect_faces` runs
the detector once for several photos, whose detections :func:`face_crops` then takes. A photo with no face,
or several when only one is allowed (``pick="only"``), raises :class:`NoFaceError` /
:class:`ManyFacesError`, both ``ValueError`` with one line naming the photo.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasface.data.align import (
    AlignOptions,
    Detector,
    Face,
    align_detected,
    choose_face,
    decode_for_alignment,
    detect_for_alignment,
)
from kerasface.data.images import crop_resize
from kerasface.face_spec import FaceSpec

__all__ = ["PICKS", "FaceCrop", "ManyFacesError", "NoFaceError", "align_options", "detect_faces", "face_crops",
           "read_photo"]

#: ``largest`` / ``central``: as ``kerasface align --pick``; ``only``: several faces are an error.
PICKS = ("largest", "central", "only")


class NoFaceError(ValueError):
    """No face passed the detector's filters."""


class ManyFacesError(ValueError):
    """Several faces passed the filters and ``pick="only"`` allows one."""


@dataclass
class FaceCrop:
    """One face of a photo: ``crop`` uint8 ``[h, w, 3]`` as the model takes it; ``box`` ``[x1, y1, x2, y2]``,
    ``landmarks`` ``[5, 2]`` and ``confidence`` in the photo's pixels (None for a centre crop: no detection)."""

    crop: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray | None = None
    confidence: float | None = None

    def describe(self) -> dict:
        """The face's place in the photo, JSON-ready."""
        return {"box": [round(float(v), 1) for v in self.box],
                "landmarks": None if self.landmarks is None else [[round(float(v), 1) for v in p]
                                                                  for p in self.landmarks],
                "confidence": None if self.confidence is None else float(self.confidence)}


def read_photo(img, name: str | None = None) -> tuple[np.ndarray, str]:
    """``(uint8 RGB [H, W, 3], name)`` of a path or an array (RGB, grey or RGBA; uint8, uint16 or float 0..1).

    A missing file raises ``FileNotFoundError``, an unreadable or non-image file
    :class:`~kerasface.data.images.CorruptImageError` (a ``ValueError``), both naming the file.
    """
    if isinstance(img, (str, os.PathLike)):
        path = Path(img).expanduser()
        name = name or str(img)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise OSError(f"{name}: cannot read ({e.strerror or e})") from None
        image, _ = decode_for_alignment(data, name)
        return image, name
    arr = np.asarray(img)
    name = name or f"<array {'x'.join(map(str, arr.shape))}>"
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3) or min(arr.shape[:2]) < 1:
        raise ValueError(f"{name}: not an image ([H, W], [H, W, 3] or [H, W, 4] expected)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype == np.uint16:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif arr.dtype != np.uint8:
        f = np.nan_to_num(arr.astype(np.float64))
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        arr = np.clip(np.round(f), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr), name


def align_options(spec: FaceSpec, pick: str = "largest", min_confidence: float = 0.9,
                  min_face_size: float = 20.0) -> AlignOptions:
    """The :class:`AlignOptions` of ``spec``'s alignment (``"mtcnn"``: the ArcFace template; ``"dlib"``: dlib's
    face-chip template) at the model's size."""
    h, w = spec.image_size
    if h != w:
        raise ValueError(f"face alignment makes square crops; the model takes {h}x{w}")
    common = dict(size=h, pick="largest" if pick == "only" else pick, min_confidence=min_confidence,
                  min_face_size=min_face_size)
    if spec.alignment == "dlib":
        return AlignOptions(template="dlib", **common)
    return AlignOptions(**common)


def _passing(faces: Sequence[Face], opts: AlignOptions) -> list[Face]:
    return [f for f in faces if f.confidence >= opts.min_confidence and f.size >= opts.min_face_size]


def detect_faces(images: Sequence[np.ndarray], spec: FaceSpec, *, detector: Detector | None = None,
                 min_face_size: float = 20.0) -> list[list[Face] | None]:
    """The faces found in each of ``images`` (uint8 RGB) for a model following ``spec``, by ONE detector call
    for them all (:func:`~kerasface.data.align.detect_for_alignment`, as ``kerasface align`` batches them);
    what :func:`face_crops` takes as ``faces``. ``None`` for each image when ``spec`` detects nothing
    (``alignment="none"``: centre crops)."""
    if spec.alignment == "none" or not images:
        return [None] * len(images)
    opts = align_options(spec, min_face_size=min_face_size)
    return detect_for_alignment(list(images), detector, opts.detect_max_side, opts.min_face_size)


def face_crops(image: np.ndarray, spec: FaceSpec, name: str, *, all_faces: bool = False, pick: str = "largest",
               detector: Detector | None = None, min_confidence: float = 0.9, min_face_size: float = 20.0,
               faces: Sequence[Face] | None = None) -> list[FaceCrop]:
    """The face crop(s) of ``image`` for a model following ``spec``: every face passing the filters (largest
    first) with ``all_faces``, else the one ``pick`` chooses. ``faces``: detections already made (else the
    ``detector``, default MTCNN, runs). Raises :class:`NoFaceError` / :class:`ManyFacesError` naming ``name``."""
    if pick not in PICKS:
        raise ValueError(f"pick must be one of {PICKS}, got {pick!r}")
    if spec.alignment == "none":
        h, w = spec.image_size
        if h != w:
            raise ValueError(f"centre crops are square; the model takes {h}x{w}")
        ih, iw = image.shape[:2]
        side = max(1, int(round(min(ih, iw) * spec.center_crop)))
        y0, x0 = (ih - side) // 2, (iw - side) // 2
        return [FaceCrop(crop_resize(image, h, spec.center_crop), np.array([x0, y0, x0 + side, y0 + side], float))]
    opts = align_options(spec, pick, min_confidence, min_face_size)
    if faces is None:
        faces = detect_faces([image], spec, detector=detector, min_face_size=min_face_size)[0]
    chosen, n_ok, why = choose_face(faces, image.shape, opts)
    if chosen is None:
        raise NoFaceError(f"{name}: no face found ({why})")
    if all_faces:
        keep = sorted(_passing(faces, opts), key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    elif n_ok > 1 and pick == "only":
        raise ManyFacesError(f"{name}: {n_ok} faces found; choose one with --pick largest or --pick central "
                             f"(or crop the photo)")
    else:
        keep = [chosen]
    out = []
    for face in keep:
        r = align_detected(image, [face], opts)
        out.append(FaceCrop(r.crop, np.asarray(face.box, float), np.asarray(face.landmarks, float),
                            float(face.confidence)))
    return out
