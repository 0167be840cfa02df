"""Decoding and caching of face images as uint8 arrays.

Pair experiments keep every distinct image of a pairs list decoded once in an
in-memory uint8 cache ``[N, size, size, 3]`` (LFW's lists use at most 9,056
distinct images, about 340 MB at 112x112); the tf.data pipeline then gathers
from that cache.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Sequence

import cv2
import numpy as np

from .lfw import ImageSource, open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = ["CorruptImageError", "decode_image", "image_dimensions", "load_images"]

# Show the progress bar only for at least this many distinct images.
PROGRESS_MIN_IMAGES = 500


class CorruptImageError(ValueError):
    """An image file is empty or cannot be decoded; the message names the file."""


# Images whose header declares more pixels than this are refused before decoding (decompression bombs);
# JPEGs over REDUCE_ABOVE_PIXELS are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), which
# every caller here (crop, then resize to ~112-250 px) can afford and which keeps memory small.
MAX_PIXELS = 400_000_000
REDUCE_ABOVE_PIXELS = 16_000_000
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def image_dimensions(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from a PNG or JPEG header without decoding; None when unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return "png", int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if i + 9 > n:
                return None
            return "jpeg", int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    return None


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to a uint8 RGB array ``[H, W, 3]`` with OpenCV.

    Grey, RGBA and 16-bit images become 8-bit RGB.  Raises :class:`CorruptImageError`
    naming ``name`` when ``data`` is empty or undecodable, or when its header
    declares more than ``MAX_PIXELS`` pixels.  JPEGs over ``REDUCE_ABOVE_PIXELS``
    are decoded at a reduced scale (a 10,000 x 10,000 photo comes back 2,500 x 2,500).
    """
    if not data:
        raise CorruptImageError(f"corrupt image {name!r}: file is empty")
    dims = image_dimensions(data)
    flags = cv2.IMREAD_COLOR
    if dims is not None:
        fmt, w, h = dims
        if w * h > MAX_PIXELS:
            raise CorruptImageError(f"image {name!r} is too large: {fmt} header declares {w} x {h} pixels "
                                    f"(limit {MAX_PIXELS:,} pixels)")
        if fmt == "jpeg" and w * h > REDUCE_ABOVE_PIXELS:
            for factor, flag in reversed(_REDUCED):
                flags = flag
                if w * h / factor**2 <= REDUCE_ABOVE_PIXELS:
                    break
            logger.info("decoding %s (%d x %d) at reduced scale", name, w, h)
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if img is None or img.size == 0 or img.ndim != 3:
        raise CorruptImageError(f"corrupt image {name!r}: cannot decode {len(data)} bytes (truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _crop_resize(img: np.ndarray, size: int, center_crop: float) -> np.ndarray:
    """Central square crop of ``center_crop`` x the shorter side, resized to ``size``."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * center_crop)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    img = img[y0:y0 + side, x0:x0 + side]
    if side != size:
        # INTER_AREA for shrinking (the normal case); it degrades to nearest when enlarging, so use linear there.
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img


def read_face(source, relpath: str, size: int, center_crop: float = 1.0, black_if_bad: bool = False) -> np.ndarray:
    """One image of ``source`` decoded, centre-cropped and resized to uint8 ``[size, size, 3]``.

    ``black_if_bad``: a missing or undecodable image gives a black image instead of
    raising (for pictures of cases, where one bad face must not stop the plot).
    """
    try:
        return _crop_resize(decode_image(source.read_bytes(relpath), relpath), size, center_crop)
    except (CorruptImageError, FileNotFoundError, KeyError):
        if not black_if_bad:
            raise
        return np.zeros((size, size, 3), np.uint8)


class TextProgress:
    """Text progress bar with items/s and ETA on stderr: redrawn in place on a terminal,
    one line per 10 % otherwise (logs, pipes). No tqdm."""

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 28, unit: str = "images", stream=None):
        self.total, self.label, self.width, self.unit = total, label, width, unit
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = self.last = time.monotonic()
        self.last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        final = done >= self.total
        if self.tty:
            if not final and now - self.last < 0.25:
                return
        else:
            decile = (10 * done) // self.total
            if decile == self.last_decile:
                return
            self.last_decile = decile
        self.last = now
        dt = max(now - self.t0, 1e-9)
        rate = done / dt
        eta = (self.total - done) / rate if rate > 0 else 0.0
        bar = "=" * int(self.width * done / self.total)
        line = (f"{self.label} [{bar:<{self.width}}] {done}/{self.total} {rate:.1f} {self.unit}/s "
                f"{dt:.0f}s" + ("" if final else f" eta {eta:.0f}s"))
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


def load_images(source, relpaths: Sequence[str], size: int = 112, center_crop: float = 1.0, on_error: str = "raise", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode, crop and resize images into a uint8 array.

    Each distinct relpath is read and decoded once (duplicates share the
    result).  Every image is cropped to a central square of ``center_crop`` x
    its shorter side, then resized to ``size`` x ``size`` with ``cv2.INTER_AREA``.

    Returns ``(images, ok)``: ``images`` uint8 ``[N, size, size, 3]`` aligned with
    ``relpaths`` and ``ok`` bool ``[N]``.  A corrupt file raises
    :class:`CorruptImageError` with ``on_error="raise"``; with ``"skip"`` it is
    logged as a WARNING (logger ``kerasface.data``), its row is left black and
    ``ok`` is False.  A missing file always raises ``FileNotFoundError`` (use
    :func:`~kerasface.data.lfw.resolve_pairs` first).  A text progress bar is
    written to stderr when ``progress`` and there are at least
    ``PROGRESS_MIN_IMAGES`` distinct images.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not 0.0 < center_crop <= 1.0:
        raise ValueError(f"center_crop must be in (0, 1], got {center_crop}")
    source: ImageSource = open_image_source(source)
    relpaths = list(relpaths)
    unique = list(dict.fromkeys(relpaths))
    row = {rel: i for i, rel in enumerate(unique)}
    cache = np.zeros((len(unique), size, size, 3), dtype=np.uint8)
    good = np.ones(len(unique), dtype=bool)
    bar = TextProgress(len(unique), "decoding images", progress and len(unique) >= PROGRESS_MIN_IMAGES)
    bad: list[str] = []
    for i, rel in enumerate(unique):
        data = source.read_bytes(rel)
        try:
            cache[i] = _crop_resize(decode_image(data, rel), size, center_crop)
        except CorruptImageError as e:
            if on_error == "raise":
                raise
            good[i] = False
            bad.append(rel)
            logger.warning("skipping %s", e)
        bar.update(i + 1)
    if bad:
        logger.warning("%d of %d images are corrupt and were skipped; first: %s", len(bad), len(unique), ", ".join(bad[:5]))
    idx = np.fromiter((row[r] for r in relpaths), dtype=np.int64, count=len(relpaths))
    if len(unique) == len(relpaths):  # no duplicates: avoid a copy
        return cache, good
    return cache[idx], good[idx]
