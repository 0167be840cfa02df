"""LFW image sources and the official pairs lists.

An :class:`ImageSource` gives byte access to LFW-style images addressed by a
relative path ``"<Name>/<Name>_0001.jpg"``, whether they live in a folder or in
a zip archive (read member by member, never extracted).  :func:`parse_pairs`
reads the official ``pairs.txt`` / ``pairsDevTrain.txt`` / ``pairsDevTest.txt``
lists and :func:`resolve_pairs` checks them against a source, reporting (never
silently dropping) pairs whose images are missing.

This module depends on the standard library only.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

logger = logging.getLogger("kerasface.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp")

__all__ = [
    "ImageSource",
    "FolderSource",
    "ZipSource",
    "open_image_source",
    "lfw_relpath",
    "Pair",
    "parse_pairs",
    "resolve_pairs",
]


def lfw_relpath(name: str, idx: int) -> str:
    """Relative path of image ``idx`` of identity ``name``: ``"Name/Name_%04d.jpg"``."""
    return "%s/%s_%04d.jpg" % (name, name, int(idx))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _unsafe_member_name(name: str) -> bool:
    """True for an archive member name that is absolute or climbs out with ``..`` (zip-slip)."""
    n = name.replace("\\", "/")
    return n.startswith("/") or (len(n) > 1 and n[1] == ":") or ".." in n.split("/")


def _norm_relpath(relpath: str) -> str:
    return str(relpath).replace("\\", "/").lstrip("/")


# --------------------------------------------------------------------------- sources
class ImageSource:
    """Read-only access to images addressed by ``"Name/Name_0001.jpg"`` relpaths."""

    path: Path

    def exists(self, relpath: str) -> bool:
        """True when the image ``relpath`` is present."""
        raise NotImplementedError

    def read_bytes(self, relpath: str) -> bytes:
        """Raw (still encoded) bytes of ``relpath``; ``FileNotFoundError`` if absent."""
        raise NotImplementedError

    def list_images(self) -> list[str]:
        """Sorted relpaths of all images in the source."""
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (no-op for folders)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _missing(self, relpath: str) -> FileNotFoundError:
        return FileNotFoundError(f"image {relpath!r} not found in {self!r}")


class FolderSource(ImageSource):
    """Images stored as files ``<root>/<Name>/<Name>_0001.jpg``."""

    def __init__(self, root: Union[str, os.PathLike]):
        self.path = Path(root)
        if not self.path.is_dir():
            raise FileNotFoundError(f"image folder not found: {str(self.path)!r}")

    def _file(self, relpath: str) -> Path:
        rel = _norm_relpath(relpath)
        if ".." in rel.split("/"):
            raise ValueError(f"relative image path may not contain '..': {relpath!r}")
        return self.path / rel

    def exists(self, relpath: str) -> bool:
        return self._file(relpath).is_file()

    def read_bytes(self, relpath: str) -> bytes:
        f = self._file(relpath)
        if not f.is_file():
            raise self._missing(relpath)
        return f.read_bytes()

    def list_images(self) -> list[str]:
        out = []
        for d in sorted(p for p in self.path.iterdir() if p.is_dir()):
            out.extend(f"{d.name}/{f.name}" for f in d.iterdir() if f.is_file() and _is_image(f.name))
        return sorted(out)

    def __repr__(self) -> str:
        return f"FolderSource({str(self.path)!r})"


class ZipSource(ImageSource):
    """Images stored as members ``[prefix/]<Name>/<Name>_0001.jpg`` of a zip archive.

    The prefix (``"lfw/"`` in the official layout, or none) is detected from the
    member names.  The archive is opened once; reads are serialised by a lock so a
    single instance can be shared by threads.

    Untrusted archives are checked when opened, before any member is read:

    * a member name that is absolute (``/x``, ``\\x``, ``C:x``) or has a ``..``
      component (zip-slip) makes the whole archive refused (``ValueError``
      naming the first such members), since paths derived from member names
      (e.g. the aligner's outputs) could otherwise escape their folder;
    * the declared uncompressed size of every image member must be at most
      ``max_member_bytes``, its declared compression ratio at most ``max_ratio``
      (for members over 1 MiB), and the declared total of all members at most
      ``max_total_bytes`` (zip bombs).  Python's ``zipfile`` never returns more
      than the declared size of a member, so these limits bound memory.
    """

    MAX_MEMBER_BYTES = 256 * 2**20   # a 10,000 x 10,000 RGB bitmap is 300 MB; real face photos are far smaller
    MAX_TOTAL_BYTES = 2**40          # 1 TiB (VGGFace2 is about 40 GB)
    MAX_RATIO = 200                  # JPEG/PNG members hardly compress; a bomb compresses 1000x and more

    def __init__(self, path: Union[str, os.PathLike], max_member_bytes: int | None = None,
                 max_total_bytes: int | None = None, max_ratio: float | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"zip archive not found: {str(self.path)!r}")
        self._lock = threading.Lock()
        self._zip = zipfile.ZipFile(self.path, "r")
        try:
            self._check_members(
                self.MAX_MEMBER_BYTES if max_member_bytes is None else int(max_member_bytes),
                self.MAX_TOTAL_BYTES if max_total_bytes is None else int(max_total_bytes),
                self.MAX_RATIO if max_ratio is None else float(max_ratio),
            )
        except Exception:
            self._zip.close()
            raise
        images = [n for n in self._zip.namelist() if not n.endswith("/") and _is_image(n)]
        self.prefix = self._detect_prefix(images)
        k = len(self.prefix)
        self._members = {n[k:]: n for n in images if n.startswith(self.prefix) and n.count("/", k) == 1}

    def _check_members(self, max_member: int, max_total: int, max_ratio: float) -> None:
        infos = self._zip.infolist()
        unsafe = [i.filename for i in infos if _unsafe_member_name(i.filename)]
        if unsafe:
            raise ValueError(f"refusing zip archive {str(self.path)!r}: {len(unsafe)} member name(s) are absolute or "
                             f"contain '..' (zip-slip); first: {', '.join(map(repr, unsafe[:3]))}")
        total = sum(i.file_size for i in infos)
        if total > max_total:
            raise ValueError(f"refusing zip archive {str(self.path)!r}: its members declare {total:,} bytes "
                             f"uncompressed, over the limit of {max_total:,} (zip bomb?)")
        for i in infos:
            if i.is_dir() or not _is_image(i.filename):
                continue
            if i.file_size > max_member:
                raise ValueError(f"refusing zip archive {str(self.path)!r}: member {i.filename!r} declares "
                                 f"{i.file_size:,} bytes uncompressed, over the per-image limit of {max_member:,}")
            if i.file_size > 2**20 and i.file_size > max_ratio * max(i.compress_size, 1):
                raise ValueError(f"refusing zip archive {str(self.path)!r}: member {i.filename!r} expands "
                                 f"{i.file_size / max(i.compress_size, 1):.0f}x ({i.compress_size:,} -> "
                                 f"{i.file_size:,} bytes), over the ratio limit of {max_ratio:g} (zip bomb?)")

    @staticmethod
    def _detect_prefix(names: Sequence[str]) -> str:
        """Most common leading folder(s) above ``Name/file`` among image members."""
        counts: dict[str, int] = {}
        for n in names:
            parts = n.split("/")
            if len(parts) >= 2:
                p = "/".join(parts[:-2])
                p = p + "/" if p else ""
                counts[p] = counts.get(p, 0) + 1
        if not counts:
            return ""
        return max(sorted(counts), key=lambda p: counts[p])

    def exists(self, relpath: str) -> bool:
        return _norm_relpath(relpath) in self._members

    def read_bytes(self, relpath: str) -> bytes:
        member = self._members.get(_norm_relpath(relpath))
        if member is None:
            raise self._missing(relpath)
        with self._lock:
            if self._zip is None:
                raise ValueError(f"{self!r} is closed")
            return self._zip.read(member)

    def list_images(self) -> list[str]:
        return sorted(self._members)

    def close(self) -> None:
        with self._lock:
            if self._zip is not None:
                self._zip.close()
                self._zip = None

    def __repr__(self) -> str:
        return f"ZipSource({str(self.path)!r}, prefix={self.prefix!r}, images={len(self._members)})"


def open_image_source(path: Union[str, os.PathLike, ImageSource]) -> ImageSource:
    """Open an LFW-style image collection.

    ``path`` may be

    * a folder ``<root>/<Name>/<Name>_0001.jpg``;
    * a folder holding an ``lfw/`` subfolder laid out like that;
    * a ``.zip`` whose members are ``lfw/<Name>/...`` or ``<Name>/...``;
    * a folder holding ``lfw.zip`` (and no ``lfw/`` subfolder), such as the
      shared data folder with the zip next to the pairs lists.

    An :class:`ImageSource` is returned unchanged.  Raises ``FileNotFoundError``
    naming the path when it does not exist.
    """
    if isinstance(path, ImageSource):
        return path
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"LFW image source not found: {str(p)!r} (expected a folder or a .zip)")
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise ValueError(f"{str(p)!r} is a file but not a zip archive")
        return ZipSource(p)
    if (p / "lfw").is_dir():
        return FolderSource(p / "lfw")
    if (p / "lfw.zip").is_file():
        return ZipSource(p / "lfw.zip")
    return FolderSource(p)


# --------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One verification pair; ``same`` is True for a matched (same person) pair."""

    name1: str
    idx1: int
    name2: str
    idx2: int
    same: bool
    fold: int

    @property
    def path1(self) -> str:
        """Relpath of the first image."""
        return lfw_relpath(self.name1, self.idx1)

    @property
    def path2(self) -> str:
        """Relpath of the second image."""
        return lfw_relpath(self.name2, self.idx2)


def _read_lines(path_or_lines) -> tuple[str, list[str]]:
    if isinstance(path_or_lines, (str, os.PathLike)):
        p = Path(path_or_lines)
        if not p.is_file():
            raise FileNotFoundError(f"pairs list not found: {str(p)!r}")
        return str(p), p.read_text(encoding="utf-8").splitlines()
    return "<lines>", [str(l).rstrip("\r\n") for l in path_or_lines]


def _int(field: str, where: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise ValueError(f"{where}: expected an integer, got {field!r}") from None


def parse_pairs(path_or_lines: Union[str, os.PathLike, Iterable[str]]) -> list[Pair]:
    """Parse an official LFW pairs list (a file path or an iterable of lines).

    Header ``"10\\t300"`` (View 2): 10 folds, each 300 matched lines
    ``Name n1 n2`` then 300 mismatched lines ``Name1 n1 Name2 n2``; folds are
    numbered 0..9.  Header ``"N"`` (View 1): N matched then N mismatched lines,
    all in fold 0.  Fields may be separated by tabs or spaces; blank lines are
    ignored.  Raises ``ValueError`` naming file and line number for a malformed
    line, and when the counts differ from what the header promises.
    """
    src, lines = _read_lines(path_or_lines)
    numbered = [(i + 1, l.split()) for i, l in enumerate(lines) if l.strip()]
    if not numbered:
        raise ValueError(f"{src}: empty pairs list")
    hline, header = numbered[0]
    where = f"{src}, line {hline}"
    if len(header) == 2:
        n_folds, per = _int(header[0], where), _int(header[1], where)
    elif len(header) == 1:
        n_folds, per = 1, _int(header[0], where)
    else:
        raise ValueError(f"{where}: bad header {' '.join(header)!r} (expected 'N' or 'FOLDS N')")
    if n_folds < 1 or per < 1:
        raise ValueError(f"{where}: header counts must be positive, got {' '.join(header)!r}")

    pairs: list[Pair] = []
    fold_size = 2 * per
    for k, (lineno, f) in enumerate(numbered[1:]):
        where = f"{src}, line {lineno}"
        fold = k // fold_size
        if len(f) == 3:
            pairs.append(Pair(f[0], _int(f[1], where), f[0], _int(f[2], where), True, fold))
        elif len(f) == 4:
            pairs.append(Pair(f[0], _int(f[1], where), f[2], _int(f[3], where), False, fold))
        else:
            raise ValueError(f"{where}: expected 3 fields (matched) or 4 fields (mismatched), got {len(f)}: {' '.join(f)!r}")

    expected = n_folds * fold_size
    if len(pairs) != expected:
        raise ValueError(f"{src}: header promises {n_folds} fold(s) x ({per} matched + {per} mismatched) = {expected} pairs, found {len(pairs)}")
    for fold in range(n_folds):
        chunk = pairs[fold * fold_size:(fold + 1) * fold_size]
        n_same = sum(p.same for p in chunk)
        if n_same != per:
            raise ValueError(f"{src}: fold {fold} has {n_same} matched and {fold_size - n_same} mismatched pairs, header promises {per} + {per}")
    return pairs


def resolve_pairs(pairs: Sequence[Pair], source: Union[ImageSource, str, os.PathLike], on_missing: str = "skip") -> tuple[list[Pair], list[tuple[Pair, str]]]:
    """Check that both images of every pair exist in ``source``.

    Returns ``(kept_pairs, missing)`` where ``missing`` holds one
    ``(pair, relpath)`` entry per absent image of a dropped pair.  With
    ``on_missing="skip"`` the drop is logged as a WARNING on logger
    ``kerasface.data`` (count and first 5 missing images); with ``"error"`` a
    ``FileNotFoundError`` is raised instead.
    """
    if on_missing not in ("skip", "error"):
        raise ValueError(f"on_missing must be 'skip' or 'error', got {on_missing!r}")
    source = open_image_source(source)
    cache: dict[str, bool] = {}

    def ok(rel: str) -> bool:
        if rel not in cache:
            cache[rel] = source.exists(rel)
        return cache[rel]

    kept: list[Pair] = []
    missing: list[tuple[Pair, str]] = []
    for p in pairs:
        gone = [rel for rel in dict.fromkeys((p.path1, p.path2)) if not ok(rel)]
        if gone:
            missing.extend((p, rel) for rel in gone)
        else:
            kept.append(p)
    if missing:
        names = list(dict.fromkeys(rel for _, rel in missing))
        n_dropped = len(pairs) - len(kept)
        msg = f"{n_dropped} of {len(pairs)} pairs reference {len(names)} image(s) missing from {source!r}; first: {', '.join(names[:5])}"
        if on_missing == "error":
            raise FileNotFoundError(msg)
        logger.warning("%s -- these pairs are skipped", msg)
    return kept, missing
