"""A frozen embedding teacher's embeddings of the training faces, computed once per image and cached on disk.

Embedding distillation (:func:`kerasface.losses.embedding_distillation_loss`) regresses the
student's embedding onto the teacher's. The teacher never changes, so its embedding of an
image is computed once -- on the teacher's own face chips (e.g. dlib's 150x150 chips for
``dlib-resnet-v1``), which need not be the student's crops -- and each training step then
costs only the student.

* :func:`load_embedding_teacher`: a pretrained name (:data:`kerasface.pretrained.NAMES`), a
  ``.keras`` file or a run folder -> a :class:`~kerasface.recognition.loading.FaceModel`
  (the model, its :class:`~kerasface.face_spec.FaceSpec`, a fingerprint of its weights).
* :func:`teacher_embeddings`: the L2-normalised teacher embeddings ``[n, views, D]`` of
  relative image paths read from the teacher's chip folder; ``views`` is 1, or 2 with
  mirrors (view 1 = the teacher's embedding of the horizontally mirrored chip, the target of
  a mirrored training face). Scaled as the teacher's FaceSpec says
  (:func:`kerasface.recognition.embedding.embed_crops`).

The cache is two files in the run folder: ``teacher_embeddings.npy`` (float32
``[n, views, D]``) and ``teacher_embeddings.json`` (``paths``: row ``i``'s relative image
path; ``ok``: whether its chip was read; ``fingerprint``: what the values depend on -- the
teacher's weights fingerprint, its FaceSpec and input size, the chip folder and its
``align_config.json``, the number of views). A call reuses every cached row whose path it
asks for when the fingerprint is the same, and recomputes everything when it differs (a
changed teacher, other chips). It is written every ``save_every`` images, so a killed run
(or its resume) loses at most that many.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from kerasface.data.align_run import CONFIG_NAME as ALIGN_CONFIG_NAME
from kerasface.data.images import ImageDecoder
from kerasface.io import atomic_path, write_json
from kerasface.recognition.embedding import embed_crops
from kerasface.recognition.loading import FaceModel, load_face_model

logger = logging.getLogger("kerasface.training")

__all__ = ["CACHE_NAME", "CACHE_VERSION", "cache_fingerprint", "load_embedding_teacher", "teacher_embeddings"]

#: ``<CACHE_NAME>.npy`` / ``<CACHE_NAME>.json`` in the run folder.
CACHE_NAME = "teacher_embeddings"
#: Bumped when the cached values change meaning: older caches are recomputed.
CACHE_VERSION = 1


def load_embedding_teacher(name) -> FaceModel:
    """The frozen teacher named by a pretrained name, a ``.keras`` file or a training run folder."""
    text = str(name)
    try:
        face_model = load_face_model(text)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--embedding-teacher {text}: {e}") from None
    face_model.model.trainable = False
    return face_model


def _align_config(folder) -> dict | None:
    f = Path(folder) / ALIGN_CONFIG_NAME
    if f.is_file():
        try:
            return json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return None


def cache_fingerprint(teacher: FaceModel, chips, views: int, center_crop: float = 1.0) -> dict:
    """What the cached values depend on (equal dicts: the cache is valid)."""
    spec = teacher.spec.to_dict()
    chips = Path(chips).expanduser()
    body = {"version": CACHE_VERSION, "teacher_weights": teacher.fingerprint, "teacher_spec": spec,
            "teacher_dim": teacher.dim, "chips": str(chips.resolve()), "chips_alignment": _align_config(chips),
            "center_crop": float(center_crop), "views": int(views)}
    body["digest"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return body


def _read_cache(folder: Path, fingerprint: dict) -> dict[str, tuple[np.ndarray, bool]]:
    """``{path: (embedding [views, D], ok)}`` of a valid cache in ``folder`` ({} if none or stale)."""
    meta_f, arr_f = folder / f"{CACHE_NAME}.json", folder / f"{CACHE_NAME}.npy"
    if not (meta_f.is_file() and arr_f.is_file()):
        return {}
    try:
        meta = json.loads(meta_f.read_text(encoding="utf-8"))
        values = np.load(arr_f, allow_pickle=False)
    except (OSError, ValueError) as e:
        logger.warning("teacher embedding cache in %s unreadable (%s): recomputing", folder, e)
        return {}
    if meta.get("fingerprint") != fingerprint:
        logger.info("teacher embedding cache in %s is of another teacher or other chips: recomputing", folder)
        return {}
    paths, ok = meta.get("paths", []), meta.get("ok", [])
    if len(paths) != len(values) or len(ok) != len(values):
        logger.warning("teacher embedding cache in %s is inconsistent: recomputing", folder)
        return {}
    return {p: (values[i], bool(good)) for i, (p, good) in enumerate(zip(paths, ok))}


def _write_cache(folder: Path, fingerprint: dict, paths: list[str], values: np.ndarray, ok: np.ndarray) -> None:
    with atomic_path(folder / f"{CACHE_NAME}.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(values, np.float32), allow_pickle=False)
    write_json(folder / f"{CACHE_NAME}.json", {"fingerprint": fingerprint, "paths": list(paths),
                                               "ok": [bool(v) for v in ok]})


def teacher_embeddings(teacher: FaceModel, paths: list[str], chips, cache_dir=None, mirrors: bool = False,
                       center_crop: float = 1.0, batch_size: int = 64, save_every: int = 1024,
                       on_error: str = "skip") -> tuple[np.ndarray, np.ndarray, dict]:
    """``(embeddings [n, views, D] float32, ok [n] bool, stats)`` of the relative image ``paths`` read from
    ``chips`` (a folder, zip or pack of the teacher's face chips), cached in ``cache_dir`` (None: no cache).

    Every chip is decoded at the teacher's input size (a centre crop of ``center_crop``), embedded by the
    teacher as its FaceSpec says and L2-normalised; with ``mirrors`` also its left-right mirror
    (``views`` = 2). A chip that cannot be read gets ``ok`` False and zero embeddings (``on_error="raise"``:
    stop instead). ``stats``: images, reused, computed, missing, seconds, images_per_second.
    """
    views = 2 if mirrors else 1
    dim = teacher.dim
    size = teacher.spec.image_size
    if size[0] != size[1]:
        raise ValueError(f"teacher {teacher.name}: square chips only, its input is {size[0]}x{size[1]}")
    fingerprint = cache_fingerprint(teacher, chips, views, center_crop)
    folder = Path(cache_dir) if cache_dir is not None else None
    cached = _read_cache(folder, fingerprint) if folder is not None else {}
    n = len(paths)
    values = np.zeros((n, views, dim), np.float32)
    ok = np.zeros(n, bool)
    todo = []
    for i, p in enumerate(paths):
        hit = cached.get(p)
        if hit is not None:
            values[i], ok[i] = hit
        else:
            todo.append(i)
    stats = {"images": n, "reused": n - len(todo), "computed": 0, "seconds": 0.0}
    if todo:
        logger.info("teacher %s: embedding %d chips%s from %s (%d reused from the cache)", teacher.name,
                    len(todo), " and their mirrors" if mirrors else "", chips, n - len(todo))
        decoder = ImageDecoder(str(chips), int(size[0]), center_crop, on_error="raise" if on_error == "error"
                               else "skip")
        t0 = time.perf_counter()
        done_rows = set(range(n)) - set(todo)
        try:
            for start in range(0, len(todo), save_every):
                part = todo[start:start + save_every]
                crops, good = decoder.decode_paths([paths[i] for i in part])
                values[part, 0] = embed_crops(teacher, crops, batch_size)
                if mirrors:
                    values[part, 1] = embed_crops(teacher, np.ascontiguousarray(crops[:, :, ::-1]), batch_size)
                values[part] *= good[:, None, None]
                ok[part] = good
                done_rows.update(part)
                if folder is not None:
                    keep = sorted(done_rows)
                    _write_cache(folder, fingerprint, [paths[i] for i in keep], values[keep], ok[keep])
                rate = (start + len(part)) / max(time.perf_counter() - t0, 1e-9)
                logger.info("teacher embeddings: %d / %d chips (%.1f chips/s%s)", start + len(part), len(todo),
                            rate, ", each also mirrored" if mirrors else "")
        finally:
            decoder.close()
        stats["computed"] = len(todo)
        stats["seconds"] = time.perf_counter() - t0
        stats["images_per_second"] = len(todo) / max(stats["seconds"], 1e-9)
    stats["missing"] = int((~ok).sum())
    return values, ok, stats
