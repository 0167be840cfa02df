"""Decoding face images into uint8 arrays: one image, a list, or rows of an identity index.

* :func:`decode_image`: encoded bytes -> uint8 RGB ``[H, W, 3]`` (OpenCV), refusing
  decompression bombs; :func:`crop_resize`: the central square of ``center_crop`` x
  the shorter side, resized; :func:`read_face`: both, for one image of a source.
* :class:`ImageDecoder`: the decoder every reader uses (chunk loaders, P x K
  batches, the classification image store, :func:`load_images`): reads and decodes
  many images with a thread pool into one preallocated uint8 array
  ``[n, size, size, 3]``, skipping (or raising on) unreadable and corrupt images and
  counting them.
* :func:`load_images`: every distinct image of a list decoded once (pair
  experiments keep the images of a pairs list in an in-memory cache
  ``[N, size, size, 3]``: LFW's lists use at most 9,056 distinct images, about
  340 MB at 112x112; the tf.data pipeline then gathers from that cache).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from .identities import IdentityIndex
from .sources import ImageSource, open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = ["CHECKED_FORMATS", "CorruptImageError", "ImageDecoder", "check_image_size", "crop_resize", "decode_image",
           "image_dimensions", "image_format", "load_images", "read_face"]

# Show the progress bar only for at least this many distinct images.
PROGRESS_MIN_IMAGES = 500
# load_images decodes (and updates its progress bar) this many images at a time.
LOAD_BLOCK = 256


class CorruptImageError(ValueError):
    """An image file is empty or cannot be decoded; the message names the file."""


# Images whose header declares more pixels than this are refused before decoding (decompression bombs);
# JPEGs over REDUCE_ABOVE_PIXELS are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), which
# every caller here (crop, then resize to ~112-250 px) can afford and which keeps memory small.
MAX_PIXELS = 400_000_000
REDUCE_ABOVE_PIXELS = 16_000_000
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


# Formats OpenCV decodes whose header this module reads; anything else is refused before decoding
# (JPEG 2000, AVIF, OpenEXR, ...: their size is not checked here, so they are not decoded).
CHECKED_FORMATS = ("png", "jpeg", "gif", "bmp", "tiff", "webp", "pnm", "pfm", "sunras", "hdr")


def _u16(data: bytes, i: int, order: str = "big") -> int:
    return int.from_bytes(data[i:i + 2], order)


def _u32(data: bytes, i: int, order: str = "big") -> int:
    return int.from_bytes(data[i:i + 4], order)


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
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
        length = _u16(data, i + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if i + 9 > n:
                return None
            return _u16(data, i + 7), _u16(data, i + 5)
        i += 2 + length
    return None


def _tiff_dimensions(data: bytes) -> tuple[int, int] | None:
    # The first IFD's ImageWidth (256) and ImageLength (257): the page OpenCV decodes.
    order = "little" if data[:2] == b"II" else "big"
    big = _u16(data, 2, order) == 43  # BigTIFF: 8-byte offsets and counts, 20-byte entries
    if big:
        off, count_size, entry, value_at = int.from_bytes(data[8:16], order), 8, 20, 12
    else:
        off, count_size, entry, value_at = _u32(data, 4, order), 2, 12, 8
    if off + count_size > len(data):
        return None
    count = int.from_bytes(data[off:off + count_size], order)
    found = {}
    for k in range(min(count, 4096)):
        e = off + count_size + k * entry
        if e + entry > len(data):
            break
        tag, typ = _u16(data, e, order), _u16(data, e + 2, order)
        if tag in (256, 257):
            size = {3: 2, 4: 4, 16: 8}.get(typ)  # SHORT, LONG, LONG8
            if size is None:
                return None
            found[tag] = int.from_bytes(data[e + value_at:e + value_at + size], order)
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # extended: canvas size, 24 bits each, minus one
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # lossless: 14 bits each, minus one
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # lossy key frame
        return _u16(data, 26, "little") & 0x3FFF, _u16(data, 28, "little") & 0x3FFF
    return None


def _header_tokens(data: bytes, start: int, count: int) -> list[bytes] | None:
    # The first ``count`` whitespace-separated tokens after ``start``, '#' comments skipped (PNM / PFM headers).
    tokens, i, n = [], start, min(len(data), 4096)
    while len(tokens) < count and i < n:
        c = data[i:i + 1]
        if c == b"#":
            while i < n and data[i:i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < n and not data[j:j + 1].isspace() and data[j:j + 1] != b"#":
                j += 1
            tokens.append(data[i:j])
            i = j
    return tokens if len(tokens) == count else None


def _pnm_dimensions(data: bytes) -> tuple[int, int] | None:
    if data[1:2] == b"7":  # PAM: "WIDTH w" and "HEIGHT h" lines before ENDHDR
        head = data[:4096].split(b"ENDHDR")[0].split()
        try:
            return int(head[head.index(b"WIDTH") + 1]), int(head[head.index(b"HEIGHT") + 1])
        except (ValueError, IndexError):
            return None
    tokens = _header_tokens(data, 2, 2)
    if tokens is None or not all(t.isdigit() for t in tokens):
        return None
    return int(tokens[0]), int(tokens[1])


def _hdr_dimensions(data: bytes) -> tuple[int, int] | None:
    # Radiance: header lines up to an empty line, then e.g. "-Y 480 +X 640".
    head = data[:65536]
    end = head.find(b"\n\n")
    if end < 0:
        return None
    line = head[end + 2:].split(b"\n", 1)[0].split()
    if len(line) != 4 or not (line[1].isdigit() and line[3].isdigit()):
        return None
    sizes = {line[0][-1:]: int(line[1]), line[2][-1:]: int(line[3])}
    if set(sizes) != {b"X", b"Y"}:
        return None
    return sizes[b"X"], sizes[b"Y"]


def image_format(data: bytes) -> str | None:
    """The format of encoded image bytes, from their signature, if it is one of :data:`CHECKED_FORMATS`."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"\xff\xd8":
        return "jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:1] == b"P" and data[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6", b"7"):
        return "pnm"
    if data[:2] in (b"PF", b"Pf"):
        return "pfm"
    if data[:4] == b"\x59\xa6\x6a\x95":
        return "sunras"
    if data[:10] == b"#?RADIANCE" or data[:6] == b"#?RGBE":
        return "hdr"
    return None


def image_dimensions(data: bytes) -> tuple[str, int, int] | None:
    """``(format, width, height)`` read from the header of encoded image bytes without decoding.

    Reads every format in :data:`CHECKED_FORMATS` (PNG, JPEG, GIF, BMP, TIFF, WebP,
    PBM/PGM/PPM/PAM, PFM, Sun raster, Radiance HDR); None for any other format or
    a header too short or malformed to give a size.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    fmt = image_format(data)
    try:
        if fmt == "png":
            size = (_u32(data, 16), _u32(data, 20)) if len(data) >= 24 and data[12:16] == b"IHDR" else None
        elif fmt == "jpeg":
            size = _jpeg_dimensions(data)
        elif fmt == "gif":  # logical screen; OpenCV decodes frames onto it
            size = (_u16(data, 6, "little"), _u16(data, 8, "little")) if len(data) >= 10 else None
        elif fmt == "bmp":
            if len(data) < 26:
                size = None
            elif _u32(data, 14, "little") == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                size = _u16(data, 18, "little"), _u16(data, 20, "little")
            else:  # BITMAPINFOHEADER and later: signed 32-bit (negative height: top-down)
                w = int.from_bytes(data[18:22], "little", signed=True)
                h = int.from_bytes(data[22:26], "little", signed=True)
                size = abs(w), abs(h)
        elif fmt == "tiff":
            size = _tiff_dimensions(data)
        elif fmt == "webp":
            size = _webp_dimensions(data)
        elif fmt == "pnm":
            size = _pnm_dimensions(data)
        elif fmt == "pfm":
            tokens = _header_tokens(data, 2, 2)
            size = (int(tokens[0]), int(tokens[1])) if tokens and all(t.isdigit() for t in tokens) else None
        elif fmt == "sunras":
            size = (_u32(data, 4), _u32(data, 8)) if len(data) >= 12 else None
        elif fmt == "hdr":
            size = _hdr_dimensions(data)
        else:
            size = None
    except (ValueError, IndexError):
        size = None
    return None if size is None else (fmt, int(size[0]), int(size[1]))


def check_image_size(data: bytes, name: str) -> tuple[str, int, int]:
    """``(format, width, height)`` of encoded image bytes, checked before any decoding.

    The one decompression-bomb check every reader goes through (:func:`decode_image`,
    and so training, evaluation and packing; alignment's decoder).  Raises
    :class:`CorruptImageError` naming ``name`` when the data is empty, in a format
    whose header is not read here (see :data:`CHECKED_FORMATS`), has a header
    without a size, or declares more than ``MAX_PIXELS`` pixels.
    """
    if not data:
        raise CorruptImageError(f"corrupt image {name!r}: file is empty")
    dims = image_dimensions(data)
    if dims is None:
        fmt = image_format(data)
        if fmt is None:
            raise CorruptImageError(f"corrupt image {name!r}: cannot decode, not an image in a supported format "
                                    f"({', '.join(CHECKED_FORMATS)}); first bytes {bytes(data[:8])!r}")
        raise CorruptImageError(f"corrupt image {name!r}: cannot decode, {fmt} header is truncated or gives no size")
    fmt, w, h = dims
    if w <= 0 or h <= 0:
        raise CorruptImageError(f"corrupt image {name!r}: {fmt} header declares {w} x {h} pixels")
    if w * h > MAX_PIXELS:
        raise CorruptImageError(f"image {name!r} is too large: {fmt} header declares {w} x {h} pixels "
                                f"(limit {MAX_PIXELS:,} pixels)")
    return dims


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode encoded image bytes to a uint8 RGB array ``[H, W, 3]`` with OpenCV.

    Grey, RGBA and 16-bit images become 8-bit RGB.  Raises :class:`CorruptImageError`
    naming ``name`` when ``data`` is empty or undecodable, or when its header
    declares more than ``MAX_PIXELS`` pixels.  JPEGs over ``REDUCE_ABOVE_PIXELS``
    are decoded at a reduced scale (a 10,000 x 10,000 photo comes back 2,500 x 2,500).
    """
    fmt, w, h = check_image_size(data, name)
    flags = cv2.IMREAD_COLOR
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


def crop_resize(img: np.ndarray, size: int, center_crop: float) -> np.ndarray:
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


_N_NAMES = 5  # example names kept in stats / log lines


@dataclass
class DecodeStats:
    """What an :class:`ImageDecoder` did so far (thread-safe counters)."""

    chunks: int = 0
    images: int = 0
    corrupt: int = 0
    missing: int = 0
    decode_seconds: float = 0.0
    bad_names: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_chunk(self) -> None:
        """One more chunk loaded (chunk loaders call this)."""
        with self.lock:
            self.chunks += 1

    def as_dict(self) -> dict:
        with self.lock:
            return {"chunks": self.chunks, "images": self.images, "corrupt": self.corrupt, "missing": self.missing,
                    "skipped": self.corrupt + self.missing, "bad_names": list(self.bad_names),
                    "decode_seconds": round(self.decode_seconds, 3),
                    "images_per_s": round(self.images / self.decode_seconds, 1) if self.decode_seconds > 0 else None}


def default_workers() -> int:
    """Decoding threads by default: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


class ImageDecoder:
    """Reads and decodes images with a thread pool into one preallocated uint8 array ``[n, s, s, 3]``.

    Args:
        images: an :class:`~kerasface.data.identities.IdentityIndex` (decode its
            rows with :meth:`decode`) or an image source / path
            (:func:`~kerasface.data.sources.open_image_source`; decode relpaths
            with :meth:`decode_paths`; an index decodes its paths too).
        image_size, center_crop: every image becomes the central square of
            ``center_crop`` x its shorter side, resized to ``image_size``
            (:func:`crop_resize`).
        num_workers: decoding threads (default :func:`default_workers`).
        on_error: an undecodable image is ``"skip"``-ped (left black, ``ok``
            False, counted in :attr:`stats`, logged) or ``"raise"``-s
            :class:`CorruptImageError`.
        on_missing: the same for an image that cannot be read (missing file or
            member); default ``on_error``.

    OpenCV releases the GIL while decoding, so the threads decode in parallel.
    :meth:`close` stops them (a context manager does it on exit).
    """

    def __init__(self, images, image_size: int = 112, center_crop: float = 1.0, num_workers: int | None = None,
                 on_error: str = "skip", on_missing: str | None = None):
        on_missing = on_error if on_missing is None else on_missing
        for name, value in (("on_error", on_error), ("on_missing", on_missing)):
            if value not in ("skip", "raise"):
                raise ValueError(f"{name} must be 'skip' or 'raise', got {value!r}")
        if not 0.0 < center_crop <= 1.0:
            raise ValueError(f"center_crop must be in (0, 1], got {center_crop}")
        if isinstance(images, IdentityIndex):
            self.index: IdentityIndex | None = images
            self._read = images.reader()
        else:
            self.index = None
            self._read = open_image_source(images).read_bytes
        self.size = int(image_size)
        self.center_crop = float(center_crop)
        self.on_error = on_error
        self.on_missing = on_missing
        self.num_workers = int(num_workers or default_workers())
        self.stats = DecodeStats()
        self._pool: ThreadPoolExecutor | None = None

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="kerasface-decode")
        return self._pool

    def close(self) -> None:
        """Stop the decoding threads (a later decode starts them again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def decode(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """``(images, ok)`` of the index rows ``rows``: uint8 ``[n, s, s, 3]`` and bool ``[n]``; failed
        rows are black and ``ok`` False (or raise, see ``on_error`` / ``on_missing``)."""
        if self.index is None:
            raise TypeError("decode(rows) needs an ImageDecoder over an IdentityIndex; use decode_paths")
        return self.decode_paths(self.index.paths(np.asarray(rows, dtype=np.int64)))

    def decode_paths(self, paths: Sequence[str], out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(images, ok)`` of the relpaths ``paths`` (as :meth:`decode`); ``out``: a uint8
        ``[n, s, s, 3]`` array to decode into (default: a new one)."""
        n, s = len(paths), self.size
        if out is None:
            out = np.empty((n, s, s, 3), dtype=np.uint8)
        t0 = time.perf_counter()

        def work(i: int):
            p = paths[i]
            try:
                data = self._read(p)
            except (OSError, KeyError) as e:
                if self.on_missing == "raise":
                    raise
                out[i] = 0
                return ("missing", p, e)
            try:
                out[i] = crop_resize(decode_image(data, p), s, self.center_crop)
            except CorruptImageError as e:
                if self.on_error == "raise":
                    raise
                out[i] = 0
                return ("corrupt", p, e)
            return None

        results = list(self._threads().map(work, range(n))) if n > 1 else [work(i) for i in range(n)]
        ok = np.fromiter((r is None for r in results), dtype=bool, count=n)
        bad = [r for r in results if r is not None]
        with self.stats.lock:
            self.stats.decode_seconds += time.perf_counter() - t0
            self.stats.images += int(ok.sum())
            for kind, p, _ in bad:
                if kind == "corrupt":
                    self.stats.corrupt += 1
                else:
                    self.stats.missing += 1
                if len(self.stats.bad_names) < _N_NAMES:
                    self.stats.bad_names.append(p)
        if bad:
            logger.warning("skipped %d unreadable/corrupt image(s) of %d; first: %s", len(bad), n,
                           "; ".join(f"{p} ({kind}: {e})" for kind, p, e in bad[:_N_NAMES]))
        return out, ok


def read_face(source, relpath: str, size: int, center_crop: float = 1.0, black_if_bad: bool = False) -> np.ndarray:
    """One image of ``source`` decoded, centre-cropped and resized to uint8 ``[size, size, 3]``.

    ``black_if_bad``: a missing or undecodable image gives a black image instead of
    raising (for pictures of cases, where one bad face must not stop the plot).
    """
    try:
        return crop_resize(decode_image(source.read_bytes(relpath), relpath), size, center_crop)
    except (CorruptImageError, FileNotFoundError, KeyError):
        if not black_if_bad:
            raise
        return np.zeros((size, size, 3), np.uint8)


class TextProgress:
    """Text progress bar with items/s and ETA on stderr: redrawn in place on a terminal,
    one line per 10 % otherwise (logs, pipes). No tqdm."""

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 28, unit: str = "images",
                 stream=None):
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


def load_images(source, relpaths: Sequence[str], size: int = 112, center_crop: float = 1.0, on_error: str = "raise",
                progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode, crop and resize images into a uint8 array.

    Each distinct relpath is read and decoded once (duplicates share the
    result).  Every image is cropped to a central square of ``center_crop`` x
    its shorter side, then resized to ``size`` x ``size`` with ``cv2.INTER_AREA``.

    Returns ``(images, ok)``: ``images`` uint8 ``[N, size, size, 3]`` aligned with
    ``relpaths`` and ``ok`` bool ``[N]``.  A corrupt file raises
    :class:`CorruptImageError` with ``on_error="raise"``; with ``"skip"`` it is
    logged as a WARNING (logger ``kerasface.data``), its row is left black and
    ``ok`` is False.  A missing file always raises ``FileNotFoundError`` (use
    :func:`~kerasface.data.lfw.resolve_pairs` first).  Decoding runs on an
    :class:`ImageDecoder` (threads).  A text progress bar is
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
    with ImageDecoder(source, size, center_crop, on_error=on_error, on_missing="raise") as decoder:
        for b in range(0, len(unique), LOAD_BLOCK):
            _, good[b:b + LOAD_BLOCK] = decoder.decode_paths(unique[b:b + LOAD_BLOCK], out=cache[b:b + LOAD_BLOCK])
            bar.update(min(b + LOAD_BLOCK, len(unique)))
    bad = [rel for rel, g in zip(unique, good) if not g]
    if bad:
        logger.warning("%d of %d images are corrupt and were skipped; first: %s", len(bad), len(unique),
                       ", ".join(bad[:5]))
    idx = np.fromiter((row[r] for r in relpaths), dtype=np.int64, count=len(relpaths))
    if len(unique) == len(relpaths):  # no duplicates: avoid a copy
        return cache, good
    return cache[idx], good[idx]
