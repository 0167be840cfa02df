"""Embeddings of a whole folder (any layout), resumable, and the ``.npz`` / ``.csv`` files that hold them.

:func:`embed_tree` walks ``SRC`` recursively (hidden files and folders left out), embeds the face(s) of
every image file and keys each row by the file's path relative to ``SRC``. Files it cannot use are
skipped and counted with their reason (not an image, unreadable, no face, several faces with
``pick="only"``). With ``checkpoint``, the rows so far are written there atomically every ``every``
images; a later call with the same model and settings starts from it and skips the images already
done, so a long run that is killed resumes where it stopped.

A :class:`Gallery` in an ``.npz`` (:meth:`Gallery.save`) keeps the model's name, the fingerprint of its
weights and its FaceSpec, so :func:`kerasface.recognition.find` embeds the query with the same model and
refuses another one. ``.csv`` (one row per face: path, face, confidence, box, landmarks, embedding) is
for other tools; it carries no model record.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasface.config import check_command_setting
from kerasface.data.align import Detector
from kerasface.data.images import CorruptImageError, TextProgress
from kerasface.data.sources import IMAGE_EXTENSIONS
from kerasface.face_spec import FaceSpec
from kerasface.io import atomic_path
from kerasface.recognition.embedding import embed_crops
from kerasface.recognition.faces import ManyFacesError, NoFaceError, detect_faces, face_crops, read_photo
from kerasface.recognition.loading import FaceModel

__all__ = ["EMBEDDINGS_FORMAT", "OUTPUT_SUFFIXES", "Gallery", "checkpoint_path", "embed_tree", "list_files",
           "load_gallery", "skipped_summary"]

EMBEDDINGS_FORMAT = "kerasface-embeddings-1"
OUTPUT_SUFFIXES = (".npz", ".csv")


_COLUMNS = {"embeddings": None, "boxes": (4,), "landmarks": (5, 2), "confidences": ()}


@dataclass
class Gallery:
    """Face embeddings keyed by relative path: row ``i`` is face ``faces[i]`` of photo ``paths[i]``.

    ``embeddings`` float32 ``[N, D]`` (unit rows), ``boxes`` ``[N, 4]``, ``landmarks`` ``[N, 5, 2]`` and
    ``confidences`` ``[N]`` (NaN where no detector ran); ``skipped`` ``{path: reason}``; ``model``,
    ``fingerprint`` and ``spec``: the model that made them; ``settings``: how faces were chosen.
    """

    source: str
    model: str
    fingerprint: str
    spec: FaceSpec
    settings: dict
    dim: int
    paths: list = field(default_factory=list)
    faces: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    # the array columns, as blocks of rows (appending is cheap; the arrays are joined when read)
    blocks: dict = field(default_factory=lambda: {k: [] for k in _COLUMNS})

    def __len__(self) -> int:
        return len(self.paths)

    def column(self, name: str) -> np.ndarray:
        """One array column, all rows (``embeddings``, ``boxes``, ``landmarks`` or ``confidences``)."""
        shape = (self.dim,) if name == "embeddings" else _COLUMNS[name]
        parts = self.blocks[name]
        if len(parts) != 1:
            joined = np.concatenate(parts) if parts else np.zeros((0, *shape), np.float32)
            self.blocks[name] = parts = [joined]
        return parts[0]

    @property
    def embeddings(self) -> np.ndarray:
        return self.column("embeddings")

    @property
    def done(self) -> set:
        return set(self.paths) | set(self.skipped)

    def check_model(self, model: FaceModel) -> None:
        if model.fingerprint != self.fingerprint:
            raise ValueError(f"{self.source}: these embeddings were made by model {self.model!r} (weights "
                             f"{self.fingerprint}), not by {model.name!r} (weights {model.fingerprint}); "
                             f"embed the gallery again with that model, or leave --model out")

    def meta(self) -> dict:
        return {"format": EMBEDDINGS_FORMAT, "source": self.source, "model": self.model,
                "fingerprint": self.fingerprint, "spec": self.spec.to_dict(), "settings": self.settings,
                "dim": self.dim}

    def arrays(self) -> dict:
        def text(values):
            return np.array(list(values), dtype=str) if len(values) else np.zeros(0, "<U1")

        return {"meta": np.array(json.dumps(self.meta())), "paths": text(self.paths),
                "faces": np.asarray(self.faces, np.int32), **{k: self.column(k) for k in _COLUMNS},
                "skipped_paths": text(self.skipped), "skipped_reasons": text(self.skipped.values())}

    def save(self, path) -> Path:
        """Write the gallery to ``path`` (``.npz`` or ``.csv``) through a temporary file."""
        path = Path(path)
        if path.suffix.lower() == ".npz":
            with atomic_path(path, suffix=".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **self.arrays())
        elif path.suffix.lower() == ".csv":
            with atomic_path(path, suffix=".csv") as tmp:
                tmp.write_text(self.to_csv(), encoding="utf-8")
        else:
            raise ValueError(f"{path}: the output must end in .npz or .csv")
        return path

    def to_csv(self) -> str:
        emb, boxes, lms, conf = (self.column(k) for k in _COLUMNS)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "face", "confidence", "x1", "y1", "x2", "y2",
                    *[f"{p}_{c}" for p in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
                      for c in "xy"], *[f"e{i}" for i in range(self.dim)]])
        for i in range(len(self)):
            w.writerow([self.paths[i], self.faces[i], "" if np.isnan(conf[i]) else repr(float(conf[i])),
                        *[f"{v:.2f}" for v in boxes[i]],
                        *["" if np.isnan(v) else f"{v:.2f}" for v in lms[i].ravel()],
                        *[repr(float(v)) for v in emb[i]]])
        return buf.getvalue()

    def extend(self, path: str, embeddings: np.ndarray, crops) -> None:
        """Add the faces of one photo: unit ``embeddings`` ``[k, D]`` and their :class:`FaceCrop` s."""
        self.paths += [path] * len(crops)
        self.faces += list(range(len(crops)))
        nan_lm = np.full((5, 2), np.nan, np.float32)
        self.blocks["embeddings"].append(np.asarray(embeddings, np.float32).reshape(len(crops), self.dim))
        self.blocks["boxes"].append(np.array([c.box for c in crops], np.float32).reshape(-1, 4))
        self.blocks["landmarks"].append(np.array([nan_lm if c.landmarks is None else c.landmarks for c in crops],
                                                 np.float32).reshape(-1, 5, 2))
        self.blocks["confidences"].append(np.array([np.nan if c.confidence is None else c.confidence
                                                    for c in crops], np.float32))


def load_gallery(path) -> Gallery:
    """A :class:`Gallery` from an ``.npz`` written by :meth:`Gallery.save` (``kerasface embed``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gallery not found: {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        meta = json.loads(str(d["meta"]))
        if meta.get("format") != EMBEDDINGS_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        g = Gallery(source=str(path), model=meta["model"], fingerprint=meta["fingerprint"],
                    spec=FaceSpec.from_dict(meta["spec"]), settings=meta.get("settings", {}), dim=int(meta["dim"]),
                    paths=[str(p) for p in d["paths"]], faces=[int(v) for v in d["faces"]],
                    skipped=dict(zip(map(str, d["skipped_paths"]), map(str, d["skipped_reasons"]))),
                    blocks={k: [np.asarray(d[k], np.float32)] for k in _COLUMNS})
        if any(len(g.column(k)) != len(g.paths) for k in _COLUMNS):
            raise ValueError("its columns differ in length")
        return g
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not an embeddings file written by `kerasface embed` ({e})") from None


def list_files(src: Path) -> list[str]:
    """Every file under ``src`` (recursively, sorted), as ``/``-separated relative paths; hidden ones left out."""
    out = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = Path(root).relative_to(src)
        out += [(rel_root / f).as_posix() for f in sorted(files) if not f.startswith(".")]
    return sorted(out)


def checkpoint_path(out) -> Path:
    """Where :func:`embed_tree` keeps the rows of an unfinished run for ``out``: ``.<name>.partial.npz`` beside it."""
    out = Path(out)
    return out.parent / f".{out.name}.partial.npz"


def embed_tree(src, model: FaceModel, *, all_faces: bool = False, pick: str = "largest",
               detector: Detector | None = None, min_confidence: float = 0.9, checkpoint=None, every: int = 200,
               batch_size: int = 16, progress: bool = True) -> Gallery:
    """Embed every image under folder ``src`` with ``model`` (see the module docstring); returns the
    :class:`Gallery`. ``checkpoint``: a ``.npz`` path to resume from and to write every ``every`` images."""
    check_command_setting("every", every, flag="every")
    check_command_setting("batch_size", batch_size, flag="batch_size")
    src = Path(src).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"SRC not found: {str(src)!r} (a folder of images, any layout)")
    settings = {"all_faces": bool(all_faces), "pick": pick, "min_confidence": float(min_confidence)}
    gallery = Gallery(source=str(src), model=model.name, fingerprint=model.fingerprint, spec=model.spec,
                      settings=settings, dim=model.dim)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
        prior = load_gallery(checkpoint)
        if prior.fingerprint != model.fingerprint or prior.settings != settings:
            raise ValueError(f"{checkpoint}: an unfinished run with another model or other settings "
                             f"({prior.model!r}, {prior.settings}); delete it or rerun with the same flags")
        gallery = prior
        gallery.source = str(src)
    files = list_files(src)
    done = gallery.done
    todo = []
    for rel in files:
        if rel in done:
            continue
        if not rel.lower().endswith(IMAGE_EXTENSIONS):
            gallery.skipped[rel] = f"{rel}: not an image file ({Path(rel).suffix or 'no extension'})"
            continue
        todo.append(rel)
    bar = TextProgress(len(todo), "embed", enabled=progress and bool(todo), unit="images")
    since_save = 0
    try:
        for start in range(0, len(todo), batch_size):
            names = todo[start:start + batch_size]
            photos = {}
            for rel in names:
                try:
                    photos[rel] = read_photo(src / rel, rel)[0]
                except (CorruptImageError, OSError) as e:
                    gallery.skipped[rel] = str(e)
            found = dict(zip(photos, detect_faces(list(photos.values()), model.spec, detector=detector)))
            faces = {}
            for rel, image in photos.items():
                try:
                    faces[rel] = face_crops(image, model.spec, rel, all_faces=all_faces, pick=pick,
                                            min_confidence=min_confidence, faces=found[rel])
                except (NoFaceError, ManyFacesError) as e:
                    gallery.skipped[rel] = str(e)
            if faces:  # one model call for the batch
                emb = embed_crops(model, np.stack([c.crop for crops in faces.values() for c in crops]))
                at = 0
                for rel, crops in faces.items():
                    gallery.extend(rel, emb[at:at + len(crops)], crops)
                    at += len(crops)
            since_save += len(names)
            bar.update(min(start + batch_size, len(todo)))
            if checkpoint is not None and since_save >= every and start + batch_size < len(todo):
                gallery.save(checkpoint)
                since_save = 0
    except KeyboardInterrupt:
        if checkpoint is not None:
            gallery.save(checkpoint)  # the photos finished so far: the same command resumes after them
        raise
    return gallery


def skipped_summary(gallery: Gallery, shown: int = 3) -> str:
    """``"skipped N file(s): 2 no face, 1 unreadable; e.g. a.jpg: ..."`` (empty when none)."""
    if not gallery.skipped:
        return ""
    kinds = Counter(_reason_kind(r) for r in gallery.skipped.values())
    examples = "; ".join(f"{r}" for r in list(gallery.skipped.values())[:shown])
    counts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    return f"skipped {len(gallery.skipped)} file(s): {counts}; e.g. {examples}"


def _reason_kind(reason: str) -> str:
    for key, kind in (("not an image file", "not an image"), ("no face", "no face"), ("faces found", "several faces"),
                      ("corrupt", "unreadable"), ("too large", "unreadable"), ("cannot read", "unreadable")):
        if key in reason:
            return kind
    return "other"
