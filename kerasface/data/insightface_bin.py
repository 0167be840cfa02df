"""InsightFace ``.bin`` verification sets (``lfw.bin``, ``agedb_30.bin``, ...), loaded without running code.

Such a file is a Python pickle of ``(bins, issame_list)``: ``bins`` holds the
encoded JPEG/PNG bytes of 2 x N faces (pair ``i`` is ``bins[2i], bins[2i+1]``)
and ``issame_list`` N booleans.  Older files store each image as ``bytes``,
newer ones (like InsightFace's ``small_lfw.bin``) as a 1-D ``numpy.ndarray`` of
uint8 holding those bytes.

``pickle.load`` on such a file would execute whatever callable the pickle
names, so :func:`load_bin` uses :class:`RestrictedUnpickler`: its
``find_class`` refuses every global except the three names a pickled uint8
ndarray needs (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
``numpy.dtype``, also under ``numpy._core``), and even those are **not** the
numpy objects: they resolve to small inert stand-ins defined here that accept
only a 1-D uint8 array whose payload is a ``bytes`` object, and turn it back
into those bytes.  No numpy (or any other) code runs on the file's data; the
only results are ``bytes``, lists, tuples, ints, strings and booleans.
Anything else raises :class:`UnsafePickleError` naming the refused global.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from .lfw import Pair, lfw_relpath
from .sources import ImageSource

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "load_bin_bytes", "load_bin", "BinSource", "bin_pairs"]

_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_NDARRAY = {("numpy", "ndarray")}
_DTYPE = {("numpy", "dtype")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asks for a global (code) that the restricted unpickler does not allow, or has an unexpected shape."""


class _NDArrayTag:
    """Stand-in for ``numpy.ndarray`` as the ``cls`` argument of ``_reconstruct``; never instantiated."""


class _DType:
    """Stand-in for ``numpy.dtype``: accepts only uint8 (``'u1'``)."""

    def __init__(self, name, align=False, copy=True):
        if name not in ("u1", "uint8", b"u1"):
            raise UnsafePickleError(f"restricted unpickler: only uint8 arrays are accepted, got dtype {name!r}")

    def __setstate__(self, state):
        pass  # byte order / flags of a one-byte type: nothing to check


class _ByteArray:
    """Stand-in for a 1-D uint8 ndarray: keeps its raw payload as ``bytes``."""

    def __init__(self):
        self.data: bytes | None = None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise UnsafePickleError("restricted unpickler: unexpected ndarray state")
        _version, shape, dtype, _fortran, raw = state
        if not isinstance(dtype, _DType):
            raise UnsafePickleError("restricted unpickler: ndarray without a uint8 dtype")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError(f"restricted unpickler: ndarray payload must be bytes, got {type(raw).__name__}")
        # InsightFace writes (n,) or (n, 1) arrays; anything whose elements are exactly the payload bytes is fine.
        if not (isinstance(shape, tuple) and 1 <= len(shape) <= 2 and all(isinstance(d, int) for d in shape)
                and (len(shape) == 1 or shape[1] == 1) and shape[0] == len(raw)):
            raise UnsafePickleError(f"restricted unpickler: only (n,) or (n, 1) byte arrays are accepted, "
                                    f"got shape {shape!r}")
        self.data = bytes(raw)


def _reconstruct(cls, shape, typecode):
    if cls is not _NDArrayTag:
        raise UnsafePickleError("restricted unpickler: _reconstruct of something other than ndarray")
    return _ByteArray()


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that resolves no real global: see the module docstring."""

    def find_class(self, module, name):
        key = (module, name)
        if key in _RECONSTRUCT:
            return _reconstruct
        if key in _NDARRAY:
            return _NDArrayTag
        if key in _DTYPE:
            return _DType
        raise UnsafePickleError(
            f"refused to load {module}.{name} from an untrusted pickle: InsightFace .bin files may hold only "
            f"image bytes (or uint8 arrays of them) and booleans"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id in an untrusted pickle")


def _as_bytes(item, i: int) -> bytes:
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, _ByteArray) and item.data is not None:
        return item.data
    raise UnsafePickleError(f"InsightFace .bin: item {i} of the image list is {type(item).__name__}, not image bytes")


def load_bin_bytes(data: bytes, name: str = "<bytes>") -> tuple[list[bytes], np.ndarray]:
    """``(encoded image bytes list, issame bool array)`` of a ``.bin`` pickle given as bytes, checked."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except Exception as e:  # truncated or garbage pickles
        raise ValueError(f"{name}: not a readable InsightFace .bin pickle ({type(e).__name__}: {e})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(o, (list, tuple)) for o in obj)):
        raise ValueError(f"{name}: expected a pickled (images, issame) pair of lists, got {type(obj).__name__}")
    bins, issame = obj
    images = [_as_bytes(b, i) for i, b in enumerate(bins)]
    if not all(isinstance(s, bool) for s in issame):
        raise ValueError(f"{name}: issame list must hold booleans")
    if len(images) != 2 * len(issame):
        raise ValueError(f"{name}: {len(images)} images for {len(issame)} pairs (expected 2 per pair)")
    return images, np.asarray(issame, dtype=bool)


def load_bin(path: str | os.PathLike, decode: bool = True):
    """Load an InsightFace ``.bin`` safely.

    Returns ``(images, issame)``: ``images`` a list of decoded uint8 RGB arrays
    (``decode=True``; corrupt ones raise :class:`~kerasface.data.images.CorruptImageError`)
    or of encoded bytes, ``issame`` a bool array with one entry per pair.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"InsightFace .bin not found: {str(p)!r}")
    images, issame = load_bin_bytes(p.read_bytes(), str(p))
    if decode:
        from .images import decode_image

        images = [decode_image(b, f"{p.name}[{i}]") for i, b in enumerate(images)]
    return images, issame


class BinSource(ImageSource):
    """The images of a ``.bin`` as an :class:`ImageSource` (``"bin/bin_0000.jpg"``, ...), for ``evaluate_pairs``."""

    NAME = "bin"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.images, self.issame = load_bin(self.path, decode=False)
        self._rel = {lfw_relpath(self.NAME, i): b for i, b in enumerate(self.images)}

    def exists(self, relpath: str) -> bool:
        return relpath in self._rel

    def read_bytes(self, relpath: str) -> bytes:
        if relpath not in self._rel:
            raise self._missing(relpath)
        return self._rel[relpath]

    def list_images(self) -> list[str]:
        return sorted(self._rel)

    def __repr__(self) -> str:
        return f"BinSource({str(self.path)!r}, images={len(self.images)})"


def bin_pairs(source: BinSource, folds: int = 10) -> list[Pair]:
    """The pairs of a :class:`BinSource`, split into ``folds`` consecutive folds (InsightFace's 10-fold protocol)."""
    n = len(source.issame)
    folds = max(1, min(folds, n))
    return [Pair(BinSource.NAME, 2 * i, BinSource.NAME, 2 * i + 1, bool(s), i * folds // n)
            for i, s in enumerate(source.issame)]
