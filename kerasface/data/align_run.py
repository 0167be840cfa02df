"""``kerasface align SRC DST``: align a whole folder tree or zip, resumably.

:func:`align_tree` reads every image ``<identity>/<image>`` of ``SRC`` (a
folder tree, or a zip such as LFW's ``lfw.zip``), detects and aligns faces in
batches (one detector call per batch) and mirrors the tree under ``DST``:

* each crop is written through a temporary file and renamed into place, so a
  killed run never leaves a half-written image;
* one CSV row per image is appended to ``DST/align_report.csv`` and flushed
  at once (columns :data:`REPORT_COLUMNS`), so the report of a killed run is
  valid up to the last finished image;
* a second run resumes: images whose row says they are finished (and whose
  crop, if any, exists) are not read or detected again; rows for unfinished
  images (``error``) are retried and replaced;
* ``DST/align_config.json`` records the crop settings; resuming with other
  settings is refused rather than mixing two kinds of crop in one tree;
* ``landmarks_from`` (an earlier run's ``align_report.csv``, or its folder) reuses
  the faces that run recorded instead of detecting again: crops of another size or
  template from the same detections, without running MTCNN (landmarks as recorded,
  to 0.1 px; images the report does not cover are detected as usual).

Bad inputs never stop the run: each image gets a status
(:data:`kerasface.data.align.STATUSES`).  What does stop it -- a missing
``SRC``, an unwritable ``DST``, a full disk -- raises ``FileNotFoundError`` /
``ValueError`` / ``OSError`` with a plain message.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..io import atomic_path, write_json
from .align import (
    ALIGNED,
    ALIGNED_MULTI,
    CORRUPT,
    ERROR,
    FALLBACK,
    NO_FACE,
    STATUSES,
    AlignOptions,
    AlignResult,
    Detector,
    Face,
    align_detected,
    decode_for_alignment,
    detect_for_alignment,
    face_template,
    format_confidence,
)
from .images import CorruptImageError, TextProgress
from .sources import FolderSource, ImageSource, open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = ["REPORT_COLUMNS", "REPORT_NAME", "CONFIG_NAME", "AlignSummary", "align_tree", "read_report",
           "save_alignment_grid"]

REPORT_NAME = "align_report.csv"
CONFIG_NAME = "align_config.json"
REPORT_COLUMNS = ("file", "status", "n_faces", "confidence", "box", "landmarks", "output", "reason")
FORMATS = ("jpg", "png")
# Statuses that are final: a resumed run does not redo them (``error`` is retried).
_FINISHED = (ALIGNED, ALIGNED_MULTI, FALLBACK, NO_FACE, CORRUPT)
_WITH_OUTPUT = (ALIGNED, ALIGNED_MULTI, FALLBACK)
# Settings that change the crops: resuming with different values is refused.
_CONFIG_KEYS = ("size", "margin", "template", "pick", "min_confidence", "min_face_size", "on_no_face", "center_crop",
                "detect_max_side", "format")


@dataclass
class AlignSummary:
    """What :func:`align_tree` did.

    ``counts`` maps each status to the number of images that have it in the
    report (this run and earlier ones); ``processed`` images were handled by
    this run, ``resumed`` were already finished; ``fallback_files`` /
    ``no_face_files`` / ``bad_files`` list the relpaths that took the centre
    crop, found no face, or were corrupt / failed; ``detect_s`` and
    ``warp_s`` split this run's time between the detector calls (including the
    downscaling of large images) and face choice + warp; ``read_s`` is reading and
    decoding, ``write_s`` encoding and the atomic writes.
    """

    src: str
    dst: str
    report: str
    total: int
    processed: int
    resumed: int
    counts: dict
    seconds: float
    detector_calls: int = 0
    detect_s: float = 0.0
    warp_s: float = 0.0
    read_s: float = 0.0
    write_s: float = 0.0
    fallback_files: list = field(default_factory=list)
    no_face_files: list = field(default_factory=list)
    bad_files: list = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        c = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v)
        lines = [f"{self.total} images in {self.src}: {c or 'nothing'}",
                 f"this run: {self.processed} images in {self.seconds:.1f} s ({self.images_per_s:.1f} images/s), "
                 f"{self.resumed} already done; detection {self.detect_s:.1f} s, warp {self.warp_s:.1f} s, "
                 f"read+decode {self.read_s:.1f} s, write {self.write_s:.1f} s",
                 f"crops under {self.dst}, report {self.report}"]
        for label, files in (("centre-crop fallback", self.fallback_files), ("no face (skipped)", self.no_face_files),
                             ("corrupt or failed", self.bad_files)):
            if files:
                more = f" (+{len(files) - 5} more)" if len(files) > 5 else ""
                lines.append(f"{label}: {len(files)}: {', '.join(files[:5])}{more}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- report
def _fmt(values, digits: int = 1) -> str:
    return " ".join(f"{float(v):.{digits}f}" for v in np.ravel(values))


def _row(rel: str, r: AlignResult, output: str) -> dict:
    f = r.face
    return {"file": rel, "status": r.status, "n_faces": r.n_detected,
            "confidence": "" if f is None else format_confidence(f.confidence),
            "box": "" if f is None else _fmt(f.box), "landmarks": "" if f is None else _fmt(f.landmarks),
            "output": output, "reason": r.reason}


def read_report(path: str | os.PathLike) -> list[dict]:
    """Rows of an align report CSV as dicts (columns :data:`REPORT_COLUMNS`).

    A trailing row cut short by a killed run (wrong field count, unknown
    status, or no final newline) is dropped.  Raises ``ValueError`` when the
    header is not an align report's.
    """
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    if not text:
        return []
    complete = text.endswith("\n")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    if tuple(rows[0]) != REPORT_COLUMNS:
        raise ValueError(f"{path}: not an align report (header {rows[0]!r}, expected {list(REPORT_COLUMNS)})")
    body = rows[1:]
    if body and not complete:
        body = body[:-1]
    return [dict(zip(REPORT_COLUMNS, r)) for r in body if len(r) == len(REPORT_COLUMNS) and r[1] in STATUSES]


def _write_report(path: Path, rows: Sequence[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=REPORT_COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)


# --------------------------------------------------------------------------- paths
def _check_dst(dst: Path, source: ImageSource) -> None:
    if isinstance(source, FolderSource) and dst.resolve() == source.path.resolve():
        raise ValueError(f"DST {str(dst)!r} is the source folder itself; choose another folder for the aligned crops")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"DST {str(dst)!r} exists and is not a folder")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create DST folder {str(dst)!r}: {e.strerror or e}") from None
    try:
        with tempfile.TemporaryFile(dir=dst):
            pass
    except OSError as e:
        raise OSError(f"DST folder {str(dst)!r} is not writable: {e.strerror or e}") from None


def _output_names(relpaths: Sequence[str], fmt: str) -> dict[str, str]:
    """relpath -> output relpath with the ``fmt`` extension; ``a.png`` + ``a.jpg`` become ``a.png.jpg`` /
    ``a.jpg.jpg``."""
    plain = {rel: str(Path(rel).with_suffix("." + fmt)).replace("\\", "/") for rel in relpaths}
    seen: dict[str, int] = {}
    for out in plain.values():
        seen[out] = seen.get(out, 0) + 1
    return {rel: out if seen[out] == 1 else f"{rel}.{fmt}" for rel, out in plain.items()}


def _config(opts: AlignOptions, fmt: str) -> dict:
    d = opts.as_dict()
    d["format"] = fmt
    return {k: d[k] for k in _CONFIG_KEYS}


def recorded_faces(report: str | os.PathLike) -> dict[str, tuple[list[Face] | None, dict]]:
    """Per image of an align report: (faces, row), the faces being the one it recorded (``[face]``),
    ``[]`` when it found none (``fallback_center`` / ``no_face``), or ``None`` when its row says nothing
    usable (corrupt, error: such images are detected again)."""
    path = Path(report).expanduser()
    if path.is_dir():
        path = path / REPORT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"landmarks report not found: {str(path)!r} (an earlier align run's {REPORT_NAME})")
    faces: dict[str, tuple[list[Face] | None, dict]] = {}
    for row in read_report(path):
        if row["status"] in (ALIGNED, ALIGNED_MULTI) and row["landmarks"] and row["box"]:
            try:
                box = np.array([float(v) for v in row["box"].split()])
                lm = np.array([float(v) for v in row["landmarks"].split()]).reshape(5, 2)
                conf = float(row["confidence"])
            except ValueError as e:
                raise ValueError(f"{path}: row of {row['file']!r} has unreadable box/landmarks ({e})") from None
            faces[row["file"]] = ([Face(box, conf, lm)], row)
        elif row["status"] in (FALLBACK, NO_FACE):
            faces[row["file"]] = ([], row)
        else:
            faces[row["file"]] = (None, row)
    return faces


def _check_config(dst: Path, cfg: dict) -> None:
    p = dst / CONFIG_NAME
    if p.is_file():
        try:
            old = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{p}: unreadable align config ({e}); delete it to start afresh") from None
        old.setdefault("template", "arcface")  # folders aligned before templates existed
        keys = list(cfg) + [k for k in ("landmarks_from",) if k in old and k not in cfg]
        diff = [f"{k} {old.get(k)!r} -> {cfg.get(k)!r}" for k in keys if old.get(k) != cfg.get(k)]
        if diff:
            raise ValueError(f"{dst} holds crops made with other settings ({'; '.join(diff)}); "
                             f"use another DST or the same settings to resume")
    write_json(p, cfg)


def _remove_stale_temporaries(dst: Path, fmt: str) -> int:
    """Delete temporary files a killed run left (``.<stem>-XXXX.<fmt>``, made by ``atomic_path``)."""
    n = 0
    for p in dst.glob(f"*/.*-*.{fmt}"):
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n


def _encode(crop: np.ndarray, fmt: str, jpeg_quality: int) -> bytes:
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if fmt == "jpg" else []
    ok, buf = cv2.imencode("." + fmt, bgr, params)
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise ValueError(f"cannot encode a {crop.shape} crop as {fmt}")
    return buf.tobytes()


# --------------------------------------------------------------------------- the run
def align_tree(src: str | os.PathLike | ImageSource, dst: str | os.PathLike,
               options: AlignOptions | None = None, *, detector: Detector | None = None,
               batch_size: int = 16, fmt: str = "jpg", jpeg_quality: int = 95, limit: int | None = None,
               progress: bool = True, landmarks_from: str | os.PathLike | None = None,
               **overrides) -> AlignSummary:
    """Align every image of ``src`` into ``dst`` (see the module docstring).

    ``options`` / keyword ``overrides`` are :class:`~kerasface.data.align.AlignOptions`
    fields; ``detector`` defaults to the shared MTCNN; ``batch_size`` images
    share one detector call; ``fmt`` is the crop format (``"jpg"`` at
    ``jpeg_quality``, or lossless ``"png"``); ``limit`` aligns only the first
    ``limit`` images (sorted order); ``landmarks_from`` (an earlier run's
    ``align_report.csv`` or folder) takes each image's face from that report instead of the
    detector.  Returns an :class:`AlignSummary`.
    """
    opts = options or AlignOptions()
    if overrides:
        opts = dataclasses.replace(opts, **overrides)
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(src, ImageSource) and not Path(src).expanduser().exists():
        raise FileNotFoundError(f"SRC not found: {str(src)!r} (expected a folder <identity>/<image> or a .zip)")
    owned = not isinstance(src, ImageSource)
    source = open_image_source(src)
    try:
        return _align_source(source, Path(dst).expanduser(), opts, detector, batch_size, fmt, jpeg_quality,
                             limit, progress, landmarks_from)
    finally:
        if owned:
            source.close()


def _align_source(source: ImageSource, dst: Path, opts: AlignOptions, detector: Detector | None, batch_size: int,
                  fmt: str, jpeg_quality: int, limit: int | None, progress: bool,
                  landmarks_from: str | os.PathLike | None = None) -> AlignSummary:
    recorded = {} if landmarks_from is None else recorded_faces(landmarks_from)
    _check_dst(dst, source)
    relpaths = source.list_images()
    if not relpaths:
        raise ValueError(f"no images found in {source!r} (expected <identity>/<image> files)")
    if limit is not None:
        relpaths = relpaths[:max(0, int(limit))]
    cfg = _config(opts, fmt)
    if landmarks_from is not None:
        cfg["landmarks_from"] = str(Path(landmarks_from).expanduser().resolve())
    _check_config(dst, cfg)
    n_stale = _remove_stale_temporaries(dst, fmt)
    if n_stale:
        logger.info("removed %d temporary file(s) left by an interrupted run", n_stale)
    outputs = _output_names(relpaths, fmt)
    root = dst.resolve()
    for rel, out in outputs.items():  # defence in depth: sources already refuse '..' and absolute names
        target = (dst / out).resolve()
        if out.startswith("/") or not target.is_relative_to(root):
            raise ValueError(f"refusing to align {rel!r} from {source!r}: its output {out!r} would be written "
                             f"outside DST {str(dst)!r}")

    report = dst / REPORT_NAME
    prior: dict[str, dict] = {}
    if report.is_file():
        for row in read_report(report):
            prior[row["file"]] = row          # the last row of a file wins
    wanted = set(relpaths)
    done = {rel for rel, row in prior.items()
            if rel in wanted and row["status"] in _FINISHED
            and (row["status"] not in _WITH_OUTPUT or (dst / row["output"]).is_file())}
    # Rewrite the report: finished rows of earlier runs only (drops a cut-off last line and rows to redo).
    kept = [row for rel, row in prior.items() if rel not in wanted or rel in done]
    _write_report(report, kept)
    todo = [rel for rel in relpaths if rel not in done]

    label = f"align ({len(done)} already done)" if done else "align"
    bar = TextProgress(len(todo), label, enabled=progress)
    t_start = time.monotonic()
    t_read = t_detect = t_warp = t_write = 0.0
    calls = 0
    new_rows: list[dict] = []
    with open(report, "a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=REPORT_COLUMNS, lineterminator="\n")

        def record(row: dict) -> None:
            writer.writerow(row)
            fh.flush()
            new_rows.append(row)

        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            t0 = time.monotonic()
            images, notes, names = [], [], []
            for rel in chunk:
                try:
                    img, note = decode_for_alignment(source.read_bytes(rel), rel)
                except CorruptImageError as e:
                    record({**_row(rel, AlignResult(CORRUPT), ""), "reason": str(e)})
                    continue
                except (OSError, ValueError) as e:
                    record({**_row(rel, AlignResult(ERROR), ""), "reason": f"cannot read: {e}"})
                    continue
                images.append(img)
                notes.append(note)
                names.append(rel)
            t1 = time.monotonic()
            t_read += t1 - t0
            results: list[AlignResult] = []
            prior_rows = [recorded.get(rel, (None, None)) for rel in names]   # (faces, row) from the report
            known = [faces for faces, _ in prior_rows]
            to_detect = [img for img, k in zip(images, known) if k is None]
            if images:
                try:
                    found = iter(detect_for_alignment(to_detect, detector, opts.detect_max_side, opts.min_face_size)
                                 if to_detect else ())
                    calls += bool(to_detect)
                    faces = [next(found) if k is None else k for k in known]
                except Exception as e:   # the detector failed for the whole batch: record, go on
                    logger.warning("detection failed for %d image(s) (%s: %s)", len(images), type(e).__name__, e)
                    faces = None
                    results = [AlignResult(ERROR, reason=f"detection failed: {type(e).__name__}: {e}")] * len(images)
                t2 = time.monotonic()
                t_detect += t2 - t1
                if faces is not None:
                    for img, f, note in zip(images, faces, notes):
                        try:
                            results.append(align_detected(img, f, opts, note))
                        except Exception as e:   # e.g. degenerate landmarks from a custom detector
                            results.append(AlignResult(ERROR, n_detected=len(f),
                                                       reason=f"alignment failed: {type(e).__name__}: {e}"))
                t_warp += time.monotonic() - t2
            for rel, r, (_, row) in zip(names, results, prior_rows):
                if row is not None and row["status"] == ALIGNED_MULTI and r.status == ALIGNED:
                    # the report kept only the face its run picked among several: say so again
                    r = dataclasses.replace(r, status=ALIGNED_MULTI, n_detected=int(row["n_faces"] or 1))
                out = ""
                if r.crop is not None:
                    out = outputs[rel]
                    tw = time.monotonic()
                    data = _encode(r.crop, fmt, jpeg_quality)
                    try:
                        with atomic_path(dst / out) as tmp:
                            tmp.write_bytes(data)
                    except OSError as e:
                        raise OSError(f"cannot write {str(dst / out)!r}: {e.strerror or e}") from None
                    t_write += time.monotonic() - tw
                record(_row(rel, r, out))
            bar.update(min(len(todo), start + len(chunk)))
    seconds = time.monotonic() - t_start

    rows = {rel: prior[rel] for rel in done}
    rows.update({row["file"]: row for row in new_rows})
    counts = {s: 0 for s in STATUSES}
    for row in rows.values():
        counts[row["status"]] += 1
    def by(status):
        return [rel for rel in relpaths if rel in rows and rows[rel]["status"] == status]

    return AlignSummary(
        src=str(source.path), dst=str(dst), report=str(report), total=len(relpaths),
        processed=len(todo), resumed=len(done), counts=counts, seconds=seconds, detector_calls=calls,
        detect_s=t_detect, warp_s=t_warp, read_s=t_read, write_s=t_write,
        fallback_files=by(FALLBACK), no_face_files=by(NO_FACE), bad_files=by(CORRUPT) + by(ERROR))


# --------------------------------------------------------------------------- picture
def save_alignment_grid(src: str | os.PathLike | ImageSource, dst: str | os.PathLike,
                        path: str | os.PathLike, n: int = 8, title: str | None = None) -> list[str]:
    """PNG grid of ``n`` originals (top, with the detected box and landmarks) and their crops (bottom).

    The images are spread evenly over the aligned rows of ``DST``'s report
    (statuses ``aligned`` / ``aligned_multi``); the crops are read back from
    ``DST`` and the template points are drawn on them as crosses.  Written
    atomically with matplotlib's Agg canvas.  Returns the relpaths shown.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    dst = Path(dst)
    rows = [r for r in read_report(dst / REPORT_NAME) if r["status"] in (ALIGNED, ALIGNED_MULTI)]
    if not rows:
        raise ValueError(f"{dst / REPORT_NAME}: no aligned image to show")
    cfg = json.loads((dst / CONFIG_NAME).read_text(encoding="utf-8"))
    template = face_template(cfg["size"], cfg["margin"], cfg.get("template", "arcface"))
    idx = list(dict.fromkeys(np.linspace(0, len(rows) - 1, min(n, len(rows))).round().astype(int)))
    picked = [rows[i] for i in idx]
    source = open_image_source(src)
    fig = Figure(figsize=(1.9 * len(picked), 4.3 if title else 4.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(picked), squeeze=False)
    for j, row in enumerate(picked):
        orig, _ = decode_for_alignment(source.read_bytes(row["file"]), row["file"])
        crop = cv2.cvtColor(cv2.imread(str(dst / row["output"])), cv2.COLOR_BGR2RGB)
        box = [float(v) for v in row["box"].split()]
        lm = np.array([float(v) for v in row["landmarks"].split()]).reshape(5, 2)
        ax = axes[0, j]
        ax.imshow(orig)
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1], fill=False, color="yellow", lw=1))
        ax.plot(lm[:, 0], lm[:, 1], "o", color="cyan", ms=2.5)
        ax.set_xlabel(Path(row["file"]).stem.replace("_", " "), fontsize=6.5)
        ax = axes[1, j]
        ax.imshow(crop)
        ax.plot(template[:, 0], template[:, 1], "+", color="red", ms=6, mew=1)
        ax.set_xlabel(f"{row['status']} {format_confidence(float(row['confidence']))}", fontsize=6.5)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("original")
    axes[1, 0].set_ylabel(f"aligned {cfg['size']}x{cfg['size']}")
    if not isinstance(src, ImageSource):
        source.close()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return [r["file"] for r in picked]
