"""Image sources: read-only access to face images addressed by a relative path ``"<Name>/<file>"``.

* :class:`FolderSource`: files ``<root>/<Name>/<Name>_0001.jpg``;
* :class:`ZipSource`: members of a zip archive (read member by member, never extracted, checked
  against zip-slip names and zip bombs when opened);
* :class:`ShardSource`: the TFRecord shards ``kerasface pack`` writes, addressed by the relative
  paths pack recorded (so an LFW pairs list resolves against a pack of LFW).

:func:`open_image_source` picks one by what a path is. Every source lists its images
(:meth:`ImageSource.list_images`), reads one's encoded bytes (:meth:`ImageSource.read_bytes`)
and names its identity (:meth:`ImageSource.identity`).

This module depends on the standard library only.
"""

from __future__ import annotations

import logging
import os
import threading
import zipfile
from collections.abc import Sequence
from pathlib import Path

from .records import INDEX_NAME, is_pack_folder, read_index, scan_shard

logger = logging.getLogger("kerasface.data")

_PREAD = hasattr(os, "pread")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp")

__all__ = ["IMAGE_EXTENSIONS", "ImageSource", "FolderSource", "ZipSource", "ShardSource", "open_image_source"]


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
    """Read-only access to images addressed by ``"Name/Name_0001.jpg"`` relpaths.

    ``path`` is where the images are; ``kind`` (``"folder"``, ``"zip"`` or
    ``"shards"``) what :func:`open_image_source` opens there.
    """

    path: Path
    kind: str = ""

    def identity(self, relpath: str) -> str:
        """The identity (person) of image ``relpath``: its first folder."""
        return _norm_relpath(relpath).split("/", 1)[0]

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

    kind = "folder"

    def __init__(self, root: str | os.PathLike):
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

    kind = "zip"
    MAX_MEMBER_BYTES = 256 * 2**20   # a 10,000 x 10,000 RGB bitmap is 300 MB; real face photos are far smaller
    MAX_TOTAL_BYTES = 2**40          # 1 TiB (VGGFace2 is about 40 GB)
    MAX_RATIO = 200                  # JPEG/PNG members hardly compress; a bomb compresses 1000x and more

    def __init__(self, path: str | os.PathLike, max_member_bytes: int | None = None,
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


class ShardSource(ImageSource):
    """Images stored in the TFRecord shards of a folder ``kerasface pack`` wrote.

    Opening reads ``index.json`` and walks every shard once
    (:func:`~kerasface.data.records.scan_shard`: record headers only, the image
    bytes are skipped) into a table ``relpath -> (shard, offset, length, label)``;
    each read is then one positioned read of the image's bytes. Relpaths are
    those pack recorded (``"Name/Name_0001.jpg"`` for a pack of an LFW folder
    or zip, so an LFW pairs list resolves); :meth:`identity` is the name pack
    recorded for the image's label.

    The bytes are what pack stored: the original file (``kerasface pack``
    without ``--image-size``), or a centre crop re-encoded at ``stored_size``
    (readers then crop and resize that crop again with their own
    ``center_crop``). Thread-safe: one instance can serve a decoding pool.
    """

    kind = "shards"

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder)
        if not self.path.is_dir():
            raise FileNotFoundError(f"pack folder not found: {str(self.path)!r}")
        meta = read_index(self.path)
        self.names: list[str] = list(meta["names"])
        self.stored_size = meta.get("image_size")
        self.encoding = meta.get("encoding", "original")
        self._files = [self.path / s["file"] for s in meta["shards"]]
        gone = [str(f) for f in self._files if not f.is_file()]
        if gone:
            raise FileNotFoundError(f"{self.path}: shard(s) listed in {INDEX_NAME} are missing: {', '.join(gone[:3])}"
                                    f"{' ...' if len(gone) > 3 else ''}")
        changed = [str(f) for f, s in zip(self._files, meta["shards"]) if f.stat().st_size != s["bytes"]]
        if changed:
            raise ValueError(f"{self.path}: shard(s) changed since packing (size differs from {INDEX_NAME}): "
                             f"{', '.join(changed[:3])}; rerun `kerasface pack` with the same settings")
        self._entries: dict[str, tuple[int, int, int, int]] = {}
        twice: list[str] = []
        for k, f in enumerate(self._files):
            for r in scan_shard(f):
                rel = _norm_relpath(r.path)
                if not 0 <= r.label < len(self.names):
                    raise ValueError(f"{f}: image {rel!r} has label {r.label}, but {INDEX_NAME} names "
                                     f"{len(self.names)} identities")
                if rel in self._entries:
                    twice.append(rel)
                self._entries[rel] = (k, r.offset, r.length, r.label)
        if twice:
            raise ValueError(f"{self.path}: {len(twice)} relative path(s) were packed more than once (first: "
                             f"{', '.join(map(repr, twice[:3]))}); an image source needs one image per path")
        self._lock = threading.Lock()
        self._open: dict[int, object] = {}
        if self.stored_size:
            logger.info("%s stores %d x %d centre crops (%s); readers crop and resize them again", self.path,
                        self.stored_size, self.stored_size, self.encoding)

    def _entry(self, relpath: str) -> tuple[int, int, int, int]:
        e = self._entries.get(_norm_relpath(relpath))
        if e is None:
            raise self._missing(relpath)
        return e

    def exists(self, relpath: str) -> bool:
        return _norm_relpath(relpath) in self._entries

    def identity(self, relpath: str) -> str:
        return self.names[self._entry(relpath)[3]]

    def read_bytes(self, relpath: str) -> bytes:
        k, offset, length, _ = self._entry(relpath)
        with self._lock:
            f = self._open.get(k)
            if f is None:
                f = self._open[k] = open(self._files[k], "rb")
            if _PREAD:
                fd = f.fileno()
            else:
                f.seek(offset)
                data = f.read(length)
        if _PREAD:
            data = os.pread(fd, length, offset)  # no shared file position: reads run in parallel
        if len(data) != length:
            raise OSError(f"{self._files[k]}: image {relpath!r} is truncated ({len(data)} of {length} bytes)")
        return data

    def list_images(self) -> list[str]:
        return sorted(self._entries)

    def close(self) -> None:
        """Close the open shard files (they reopen on the next read)."""
        with self._lock:
            for f in self._open.values():
                f.close()
            self._open = {}

    def __repr__(self) -> str:
        stored = f"{self.stored_size}px {self.encoding}" if self.stored_size else "original"
        return (f"ShardSource({str(self.path)!r}, images={len(self._entries)}, shards={len(self._files)}, "
                f"stored={stored})")


def open_image_source(path: str | os.PathLike | ImageSource) -> ImageSource:
    """Open an LFW-style image collection.

    ``path`` may be

    * a folder ``<root>/<Name>/<Name>_0001.jpg``;
    * a folder holding an ``lfw/`` subfolder laid out like that;
    * a ``.zip`` whose members are ``lfw/<Name>/...`` or ``<Name>/...``;
    * a folder holding ``lfw.zip`` (and no ``lfw/`` subfolder), such as the
      shared data folder with the zip next to the pairs lists;
    * a folder ``kerasface pack`` wrote (``index.json`` + TFRecord shards):
      a :class:`ShardSource` (an unfinished pack raises ``FileNotFoundError``
      saying so).

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
    if is_pack_folder(p):
        return ShardSource(p)
    if (p / "lfw").is_dir():
        return FolderSource(p / "lfw")
    if (p / "lfw.zip").is_file():
        return ZipSource(p / "lfw.zip")
    return FolderSource(p)


