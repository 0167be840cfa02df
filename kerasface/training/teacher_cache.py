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
changed teacher, other chips).

While it computes, every ``save_every`` images go to a part of their own in
``teacher_embeddings.parts/`` (``part-NNNNNN.npy`` and ``.json``, the same layout; each
written atomically, its ``.json`` last), so the I/O is linear in the images and a killed
run (or its resume) loses at most ``save_every`` of them: the next call reads the parts too.
When every row is there, the two files above are written once (the rows in the order asked
for) and the parts removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from kerasface.data.align_run import CONFIG_NAME as ALIGN_CONFIG_NAME
from kerasface.data.images import ImageDecoder
from kerasface.io import atomic_path, write_json
from kerasface.recognition.embedding import embed_crops
from kerasface.recognition.loading import FaceModel, load_face_model

logger = logging.getLogger("kerasface.training")

__all__ = ["CACHE_NAME", "CACHE_VERSION", "PARTS_NAME", "cache_fingerprint", "centred_targets",
           "load_embedding_teacher", "teacher_embeddings"]

#: ``<CACHE_NAME>.npy`` / ``<CACHE_NAME>.json`` in the run folder.
CACHE_NAME = "teacher_embeddings"
#: Bumped when the cached values change meaning: older caches are recomputed.
CACHE_VERSION = 1
#: The folder (in the run folder) of the parts of a computation in progress.
PARTS_NAME = f"{CACHE_NAME}.parts"


def centred_targets(values: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher targets centred on the training images' mean embedding and renormalised.

    ``values`` ``[rows, views, D]`` are unit embeddings, the first ``n_train`` rows the training images.
    Returns ``(centred, mean)``: ``mean`` ``[D]`` the average over the training rows and their views, and
    ``centred = (values - mean) / |values - mean|`` (a row equal to the mean stays zero).  A teacher whose
    embeddings share one strong direction (dlib's ResNet: the mean of its unit embeddings of LFW faces has
    norm 0.91) keeps what tells faces apart in the residual; distilling the centred targets makes the whole
    loss about that residual instead of about the common direction.  Distances between two embeddings
    before renormalising are unchanged by centring.
    """
    values = np.asarray(values, np.float32)
    if not 0 < n_train <= len(values):
        raise ValueError(f"n_train must be in [1, {len(values)}], got {n_train}")
    mean = values[:n_train].reshape(-1, values.shape[-1]).astype(np.float64).mean(axis=0)
    centred = values - mean.astype(np.float32)
    norm = np.linalg.norm(centred, axis=-1, keepdims=True)
    return (centred / np.where(norm > 0, norm, 1.0)).astype(np.float32), mean


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


def _read_rows(arr_f: Path, meta_f: Path, fingerprint: dict) -> tuple[list, np.ndarray, list] | None:
    """``(paths, values [n, views, D], ok)`` of one cache file pair (the whole cache or a part) when it
    is complete, readable and of ``fingerprint``; else None."""
    if not (meta_f.is_file() and arr_f.is_file()):
        return None
    try:
        meta = json.loads(meta_f.read_text(encoding="utf-8"))
        values = np.load(arr_f, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        logger.warning("teacher embedding cache %s unreadable (%s): recomputing its rows", arr_f, e)
        return None
    if meta.get("fingerprint") != fingerprint:
        logger.info("teacher embedding cache %s is of another teacher or other chips: recomputing", arr_f)
        return None
    paths, ok = meta.get("paths", []), meta.get("ok", [])
    if len(paths) != len(values) or len(ok) != len(values):
        logger.warning("teacher embedding cache %s is inconsistent: recomputing its rows", arr_f)
        return None
    return paths, values, ok


def _write_rows(arr_f: Path, meta_f: Path, fingerprint: dict, paths: list[str], values: np.ndarray,
                ok: np.ndarray) -> None:
    """The array, then the ``.json`` that names its rows (each atomically): a file pair without its
    ``.json`` is not read."""
    with atomic_path(arr_f) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(values, np.float32), allow_pickle=False)
    write_json(meta_f, {"fingerprint": fingerprint, "paths": list(paths), "ok": [bool(v) for v in ok]})


def _part_files(parts: Path) -> list[tuple[Path, Path]]:
    return [(f.with_suffix(".npy"), f) for f in sorted(parts.glob("part-*.json"))]


def _next_part(parts: Path) -> int:
    numbers = [int(f.stem.split("-")[1]) for f in parts.glob("part-*.*") if f.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


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
    n = len(paths)
    values = np.zeros((n, views, dim), np.float32)
    ok = np.zeros(n, bool)
    whole, sources = None, []
    if cache_dir is not None:
        folder = Path(cache_dir)
        arr_f, meta_f, parts = folder / f"{CACHE_NAME}.npy", folder / f"{CACHE_NAME}.json", folder / PARTS_NAME
        whole = _read_rows(arr_f, meta_f, fingerprint)
        sources = [found for found in [_read_rows(a, m, fingerprint) for a, m in _part_files(parts)] + [whole]
                   if found is not None]
    where = {}  # path -> (source, row)
    for s, (stored_paths, _, _) in enumerate(sources):
        where.update((p, (s, j)) for j, p in enumerate(stored_paths))
    todo, picks = [], [([], []) for _ in sources]
    for i, p in enumerate(paths):
        hit = where.get(p)
        if hit is None:
            todo.append(i)
        else:
            picks[hit[0]][0].append(i)
            picks[hit[0]][1].append(hit[1])
    for (dst, src), (_, stored_values, stored_ok) in zip(picks, sources):
        if dst:
            values[dst] = stored_values[src]
            ok[dst] = np.asarray(stored_ok, bool)[src]
    stats = {"images": n, "reused": n - len(todo), "computed": 0, "seconds": 0.0}
    if todo:
        logger.info("teacher %s: embedding %d chips%s from %s (%d reused from the cache)", teacher.name,
                    len(todo), " and their mirrors" if mirrors else "", chips, n - len(todo))
        decoder = ImageDecoder(str(chips), int(size[0]), center_crop, on_error="raise" if on_error == "error"
                               else "skip")
        t0 = time.perf_counter()
        number = _next_part(parts) if cache_dir is not None else 0
        try:
            for start in range(0, len(todo), save_every):
                part = todo[start:start + save_every]
                crops, good = decoder.decode_paths([paths[i] for i in part])
                values[part, 0] = embed_crops(teacher, crops, batch_size)
                if mirrors:
                    values[part, 1] = embed_crops(teacher, np.ascontiguousarray(crops[:, :, ::-1]), batch_size)
                values[part] *= good[:, None, None]
                ok[part] = good
                if cache_dir is not None:
                    name = f"part-{number:06d}"
                    _write_rows(parts / f"{name}.npy", parts / f"{name}.json", fingerprint,
                                [paths[i] for i in part], values[part], ok[part])
                    number += 1
                rate = (start + len(part)) / max(time.perf_counter() - t0, 1e-9)
                logger.info("teacher embeddings: %d / %d chips (%.1f chips/s%s)", start + len(part), len(todo),
                            rate, ", each also mirrored" if mirrors else "")
        finally:
            decoder.close()
        stats["computed"] = len(todo)
        stats["seconds"] = time.perf_counter() - t0
        stats["images_per_second"] = len(todo) / max(stats["seconds"], 1e-9)
    if cache_dir is not None:
        in_whole = set(whole[0]) if whole is not None else set()
        if any(p not in in_whole for p in paths):  # rows computed now or in the parts of a killed computation
            if whole is not None and len(whole[0]) == n:
                # a kill between the two renames must not leave the old .json naming the new array's rows
                meta_f.unlink()
            _write_rows(arr_f, meta_f, fingerprint, paths, values, ok)
        shutil.rmtree(parts, ignore_errors=True)
    stats["missing"] = int((~ok).sum())
    return values, ok, stats
