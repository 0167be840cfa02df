"""The everyday calls: :func:`represent` (a photo's face embeddings), :func:`verify` (same person?) and
:func:`find` (who in a gallery looks most like this face?), named after deepface's.

Each takes photos as paths or RGB arrays and a model as a :class:`~kerasface.recognition.loading.FaceModel`,
a ``keras.Model``, a ``.keras`` file, a training run folder or a pretrained name; the model's
:class:`~kerasface.face_spec.FaceSpec` says how faces are cropped, scaled and compared, so no caller writes
``(x - 127.5) / 128``. Embeddings are L2-normalised (as ``kerasface evaluate`` scores them): ``cosine`` is
their dot product, ``l2`` their Euclidean distance, and the model's threshold is read in those units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasface.config import check_command_setting
from kerasface.data.align import Detector
from kerasface.face_spec import FaceSpec
from kerasface.recognition.embedding import compare, embed_crops
from kerasface.recognition.faces import FaceCrop, detect_faces, face_crops, read_photo
from kerasface.recognition.gallery import Gallery, embed_tree, load_gallery
from kerasface.recognition.loading import FaceModel, load_face_model

__all__ = ["find", "rank", "represent", "threshold_rule", "verify"]


def threshold_rule(spec: FaceSpec, threshold: float) -> str:
    return f"same person when {spec.metric} {'>=' if spec.metric == 'cosine' else '<='} {threshold:g}"


def _photo_faces(img, model: FaceModel, *, all_faces: bool, pick: str, detector: Detector | None,
                 min_confidence: float) -> tuple[list[FaceCrop], str]:
    image, name = read_photo(img)
    return face_crops(image, model.spec, name, all_faces=all_faces, pick=pick, detector=detector,
                      min_confidence=min_confidence), name


def represent(img, model=None, *, all_faces: bool = False, pick: str = "largest", detector: Detector | None = None,
              min_confidence: float = 0.9) -> list[dict]:
    """The face(s) of one photo (a path or an RGB array) as ``[{"embedding", "box", "landmarks", "confidence"}]``.

    One face (chosen by ``pick``: ``largest``, ``central``, or ``only``: several faces are an error) or, with
    ``all_faces``, every face that passes the detector's filters, largest first. ``embedding`` is a unit
    float32 vector; ``box`` ``[x1, y1, x2, y2]``, ``landmarks`` ``[[x, y]] * 5`` and ``confidence`` are in the
    photo's pixels (a model that takes centre crops has no detection: the box is the crop, the rest None).
    A photo without a face raises ``ValueError`` naming it.
    """
    fm = load_face_model(model)
    faces, _ = _photo_faces(img, fm, all_faces=all_faces, pick=pick, detector=detector,
                            min_confidence=min_confidence)
    emb = embed_crops(fm, np.stack([f.crop for f in faces]))
    return [{"embedding": e, **f.describe()} for e, f in zip(emb, faces)]


def verify(img1, img2, model=None, *, threshold: float | None = None, pick: str = "largest",
           detector: Detector | None = None, min_confidence: float = 0.9) -> dict:
    """Are the faces of two photos (paths or arrays) the same person?

    Returns ``{"verified", "same", "metric", "score", "distance", "threshold", "threshold_source", "rule",
    "model", "faces"}``: ``score`` is the model's metric (cosine similarity, or l2 distance) compared with
    ``threshold``; ``distance`` is ``1 - cosine`` or the l2 distance; ``verified`` (deepface's name) and
    ``same`` are the verdict. ``threshold`` defaults to the one the model ships (its FaceSpec); without
    either, ``ValueError``.
    """
    fm = load_face_model(model)
    spec = fm.spec
    if threshold is not None:
        spec, source = spec.replace(threshold=float(threshold)), "given (--threshold)"
    else:
        source = spec.threshold_source or "shipped with the model"
    if spec.threshold is None:
        raise ValueError(f"model {fm.name}: it ships no decision threshold; pass one (--threshold, "
                         f"a {spec.metric} {'similarity' if spec.metric == 'cosine' else 'distance'})")
    photos = [read_photo(img) for img in (img1, img2)]
    found = detect_faces([image for image, _ in photos], spec, detector=detector)  # one detector call for both
    faces = [face_crops(image, spec, name, pick=pick, min_confidence=min_confidence, faces=f)[0]
             for (image, name), f in zip(photos, found)]
    emb = embed_crops(fm, np.stack([f.crop for f in faces]))
    score = float(compare(spec, emb[0], emb[1]))
    same = bool(spec.same(score))
    return {"verified": same, "same": same, "metric": spec.metric, "score": score,
            "distance": 1.0 - score if spec.metric == "cosine" else score,
            "threshold": spec.threshold, "threshold_source": source, "rule": threshold_rule(spec, spec.threshold),
            "model": fm.name, "faces": [f.describe() for f in faces]}


def find(img, gallery, model=None, *, top: int = 5, pick: str = "largest", detector: Detector | None = None,
         min_confidence: float = 0.9, progress: bool = False) -> list[dict]:
    """The ``top`` gallery faces most like the face of ``img``, best first.

    ``gallery``: a folder of photos (any layout, embedded now), an embeddings ``.npz`` written by
    ``kerasface embed`` (then ``model`` defaults to the one that wrote it, and another model is refused),
    or a :class:`~kerasface.recognition.gallery.Gallery`. Each match is ``{"rank", "path", "face", "metric",
    "score", "distance", "same"}`` (``same``: None when the model ships no threshold).
    """
    check_command_setting("top", top, flag="top")
    g = gallery if isinstance(gallery, Gallery) else None
    if g is None and str(gallery).endswith(".npz"):
        g = load_gallery(gallery)
    if g is not None:
        fm = load_face_model(model if model is not None else g.model)
        g.check_model(fm)
    else:
        if not Path(gallery).expanduser().is_dir():
            raise FileNotFoundError(f"gallery not found: {str(gallery)!r} (a folder of photos or an embeddings .npz)")
        fm = load_face_model(model)
        g = embed_tree(gallery, fm, pick=pick, detector=detector, min_confidence=min_confidence, progress=progress)
    if len(g) == 0:
        raise ValueError(f"gallery {g.source}: holds no face embeddings")
    crops, _ = _photo_faces(img, fm, all_faces=False, pick=pick, detector=detector, min_confidence=min_confidence)
    query = embed_crops(fm, np.stack([crops[0].crop]))[0]
    return rank(fm.spec, query, g, top)


def rank(spec: FaceSpec, query: np.ndarray, gallery: Gallery, top: int) -> list[dict]:
    """The ``top`` rows of ``gallery`` closest to the unit embedding ``query`` under ``spec.metric``."""
    scores = compare(spec, gallery.embeddings, query[None, :])
    order = np.argsort(-scores if spec.metric == "cosine" else scores, kind="stable")[:top]
    out = []
    for r, i in enumerate(order, 1):
        s = float(scores[i])
        out.append({"rank": r, "path": str(gallery.paths[i]), "face": int(gallery.faces[i]), "metric": spec.metric,
                    "score": s,
                    "distance": 1.0 - s if spec.metric == "cosine" else s,
                    "same": None if spec.threshold is None else bool(spec.same(s))})
    return out


