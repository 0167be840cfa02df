"""A compact file list of face images grouped by identity.

:class:`IdentityIndex` holds the paths and integer identity labels of an image
collection of any size (LFW's 13k images up to millions of files) without one
Python object per image:

* ``blob``: every path's UTF-8 bytes, concatenated (uint8);
* ``offsets``: int64 ``[N + 1]``, path ``i`` is ``blob[offsets[i]:offsets[i + 1]]``;
* ``labels``: int32 ``[N]``, non-decreasing: entries are stored grouped by
  identity (identity ``k`` owns rows ``starts[k]:starts[k + 1]``), inside an
  identity in listing order;
* ``names``: the identity names, ``names[k]`` for label ``k`` (sorted).

That is ``len(path) + 12`` bytes per image (about 50 bytes for an LFW-style
``Name/Name_0001.jpg`` path): 3.3M images take about 170 MB.  An index can be
written to a folder of ``.npy`` files and memory-mapped back
(:meth:`IdentityIndex.save` / :meth:`IdentityIndex.load`), so a training
process touches only the pages of the paths it actually reads.

Sources: an LFW-style folder tree ``<root>/<identity>/<image>``, the LFW zip,
a ``kerasface pack`` folder of TFRecord shards (anything
:func:`~kerasface.data.sources.open_image_source` opens), or a text file
list with one ``path,label`` line per image (``path`` alone: the label is the
parent folder's name).

:func:`fold_identities` returns the people named in given folds of an LFW
pairs list, so a training set can leave out the people of a test fold.

This module needs only numpy and the standard library.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from array import array
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .lfw import Pair, parse_pairs
from .sources import IMAGE_EXTENSIONS, ImageSource, open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = ["IdentityIndex", "fold_identities"]

PathLike = str | os.PathLike

# Words accepted as a header line of a file list ("path,label").
_HEADER_PATH = {"path", "file", "filename", "image", "img", "relpath"}
_HEADER_LABEL = {"label", "identity", "id", "name", "person", "class", "subject"}
_GATHER_BLOCK = 1 << 13  # entries per block when gathering strings (bounds the temporary byte index)


def _natural_key(name: str):
    """Sort key: decimal names numerically ("2" < "10"), then other names as text."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _gather_strings(blob: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the strings ``rows`` of ``(blob, offsets)`` into a new ``(blob, offsets)``.

    Works block by block so the temporary byte-position index stays small.
    """
    rows = np.asarray(rows, dtype=np.int64)
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), dtype=np.uint8)
    for b in range(0, len(rows), _GATHER_BLOCK):
        r = rows[b:b + _GATHER_BLOCK]
        ln = lengths[b:b + _GATHER_BLOCK]
        if not len(r):
            continue
        total = int(ln.sum())
        if total == 0:
            continue
        # byte positions: start of each string repeated over its length, plus 0..len-1
        starts = np.repeat(offsets[r], ln)
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(ln) - ln, ln)
        out[new_offsets[b]:new_offsets[b] + total] = blob[starts + within]
    return out, new_offsets


class _ListBuilder:
    """Accumulates (path bytes, identity name) compactly, then sorts into an index."""

    def __init__(self):
        self.blob = bytearray()
        self.lengths = array("q")
        self.labels = array("i")
        self.ids: dict = {}  # identity name (str, or bytes while reading a file list) -> first-seen id

    def label_of(self, name) -> int:
        k = self.ids.get(name)
        if k is None:
            k = self.ids[name] = len(self.ids)
        return k

    def add(self, path: bytes, label: int) -> None:
        self.blob += path
        self.lengths.append(len(path))
        self.labels.append(label)

    def build(self, root, kind: str) -> IdentityIndex:
        first_seen = [n.decode("utf-8") if isinstance(n, bytes) else n for n in self.ids]
        names = sorted(first_seen, key=_natural_key)
        remap = np.empty(len(names), dtype=np.int32)
        pos = {n: i for i, n in enumerate(names)}
        for old, n in enumerate(first_seen):
            remap[old] = pos[n]
        labels = remap[np.frombuffer(self.labels, dtype=np.int32)] if len(self.labels) else np.zeros(0, np.int32)
        blob = np.frombuffer(self.blob, dtype=np.uint8)  # no copy: the array keeps the bytearray alive
        self.blob = bytearray()
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        if len(self.lengths):
            np.cumsum(np.frombuffer(self.lengths, dtype=np.int64), out=offsets[1:])
        self.lengths = array("q")
        if len(labels) > 1 and np.any(labels[1:] < labels[:-1]):
            order = np.argsort(labels, kind="stable")
            blob, offsets = _gather_strings(blob, offsets, order)
            labels = labels[order]
        return IdentityIndex(blob, offsets, labels, names, root=root, kind=kind)



def _entry_is(entry: os.DirEntry, kind: str, unreadable: list) -> bool:
    """``entry.is_dir()`` / ``is_file()`` (following symbolic links); an entry that cannot be followed (a
    looping symbolic link: ``OSError`` ELOOP) is added to ``unreadable`` and is neither."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        unreadable.append(entry.path)
        return False

class IdentityIndex:
    """Paths + int labels of a face collection, grouped by identity (see the module docstring).

    Build one with :meth:`from_source` (folder tree or zip), :meth:`from_csv`
    (text file list), :meth:`from_paths` (Python lists) or :meth:`open` (any of
    them, by what the path is).  Subsets (:meth:`filter`, :meth:`select`,
    :meth:`exclude`, :meth:`take`) are new indexes with labels renumbered
    ``0..K-1`` in name order.

    ``root`` and ``kind`` tell how a path is read: ``kind="folder"`` reads the
    file ``root / path`` (an absolute ``path`` ignores ``root``);
    ``kind="zip"`` reads member ``path`` of the zip ``root`` and
    ``kind="shards"`` image ``path`` of the pack folder ``root``, through the
    :mod:`~kerasface.data.sources` source :func:`open_image_source` opens there.
    """

    KINDS = ("folder", "zip", "shards")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray, labels: np.ndarray, names: Sequence[str],
                 root: PathLike | None = None, kind: str = "folder"):
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.blob = blob
        self.offsets = offsets
        self.labels = labels
        self.names = list(names)
        self.root = None if root is None else str(root)
        self.kind = kind
        n_ids = len(self.names)
        if len(offsets) != len(labels) + 1:
            raise ValueError(f"offsets has {len(offsets)} entries for {len(labels)} labels (expected labels + 1)")
        if len(labels) and (labels.min() < 0 or labels.max() >= n_ids):
            raise ValueError(f"labels must lie in [0, {n_ids}); got [{labels.min()}, {labels.max()}]")
        if len(labels) > 1 and np.any(np.diff(labels) < 0):
            raise ValueError("labels must be non-decreasing (entries grouped by identity)")
        self.starts = np.searchsorted(labels, np.arange(n_ids + 1), side="left").astype(np.int64)
        self._source: ImageSource | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def open(cls, path: PathLike | ImageSource, **kwargs) -> IdentityIndex:
        """Index a folder tree, an LFW zip, a saved index folder, or a ``.csv`` / ``.txt`` file list."""
        if isinstance(path, ImageSource):
            return cls.from_source(path)
        p = Path(path).expanduser()
        if p.is_dir() and (p / "index.json").is_file() and (p / "blob.npy").is_file():  # not a `pack` folder
            return cls.load(p, **kwargs)
        if p.is_file() and not zipfile.is_zipfile(p):
            return cls.from_csv(p, **kwargs)
        return cls.from_source(p)

    @classmethod
    def from_source(cls, source: PathLike | ImageSource) -> IdentityIndex:
        """Index every image of an image collection, by the identity its source names.

        ``source`` is anything :func:`~kerasface.data.sources.open_image_source`
        accepts.  A folder tree is walked with ``os.scandir`` (no list of all
        paths is built; identity = first folder of the relpath); a zip's or a
        pack's images come from its source's :meth:`~ImageSource.list_images`
        and :meth:`~ImageSource.identity` (the first folder in a zip, the
        recorded identity in a pack).
        """
        src = open_image_source(source)
        b = _ListBuilder()
        if src.kind != "folder":
            for rel in src.list_images():
                b.add(rel.encode("utf-8"), b.label_of(src.identity(rel)))
            index = b.build(os.path.abspath(src.path), src.kind)
            index._source = src
            return index
        root = Path(src.path)
        unreadable: list[str] = []
        with os.scandir(root) as it:
            dirs = sorted(e.name for e in it if _entry_is(e, "dir", unreadable))
        for name in dirs:
            with os.scandir(root / name) as it:
                files = sorted(e.name for e in it if e.name.lower().endswith(IMAGE_EXTENSIONS)
                               and _entry_is(e, "file", unreadable))
            if not files:
                continue
            k = b.label_of(name)
            for f in files:
                b.add(f"{name}/{f}".encode(), k)
        if unreadable:
            logger.warning("skipped %d entr%s of %s that cannot be followed (a looping or broken symbolic link?): %s",
                           len(unreadable), "y" if len(unreadable) == 1 else "ies", root, ", ".join(unreadable[:5]))
        return b.build(os.path.abspath(root), "folder")

    @classmethod
    def from_csv(cls, path: PathLike, root: PathLike | None = None, sep: str = ",",
                 header: bool | None = None) -> IdentityIndex:
        """Index a text file list, one image a line: ``path<sep>label`` or just ``path``.

        The label is the text after the *last* ``sep`` (so paths may contain
        ``sep``); a line without ``sep`` takes its parent folder's name as the
        label.  Blank lines and lines starting with ``#`` are ignored.
        ``header=None`` skips a first line such as ``path,label`` (words like
        path/file/image and label/identity/name); ``True`` always skips it,
        ``False`` never.  Relative paths are read from ``root`` (default: the
        list's folder).  The file is read line by line; memory grows by the
        compact index only.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"file list not found: {str(p)!r}")
        bsep = sep.encode("utf-8")
        b = _ListBuilder()
        first = True
        with open(p, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if not line or line.startswith(b"#"):
                    continue
                rel, s, lab = line.rpartition(bsep)
                if not s:  # no label column: parent folder
                    rel = line
                    parts = line.replace(b"\\", b"/").rstrip(b"/").split(b"/")
                    if len(parts) < 2:
                        raise ValueError(f"{p}, line {lineno}: no label and no parent folder in "
                                         f"{line.decode('utf-8', 'replace')!r}")
                    lab = parts[-2]
                else:
                    rel, lab = rel.strip(), lab.strip()
                if first:
                    first = False
                    is_header = header
                    if header is None:
                        is_header = (rel.decode("utf-8", "replace").lower() in _HEADER_PATH
                                     and lab.decode("utf-8", "replace").lower() in _HEADER_LABEL)
                    if is_header:
                        continue
                if not rel or not lab:
                    raise ValueError(f"{p}, line {lineno}: empty path or label in {line.decode('utf-8', 'replace')!r}")
                b.add(rel, b.label_of(bytes(lab)))
        return b.build(os.path.abspath(root if root is not None else p.parent), "folder")

    @classmethod
    def from_paths(cls, paths: Iterable[str], labels: Iterable, root: PathLike | None = None) -> IdentityIndex:
        """Index parallel sequences of paths and labels (names or ints, turned into names)."""
        b = _ListBuilder()
        for rel, lab in zip(paths, labels, strict=True):
            b.add(str(rel).encode("utf-8"), b.label_of(str(lab)))
        return b.build(root, "folder")

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("blob", "offsets", "labels")

    def save(self, folder: PathLike) -> Path:
        """Write the index as ``blob.npy``, ``offsets.npy``, ``labels.npy`` and ``index.json`` in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in self._ARRAYS:
            tmp = folder / f".{name}.tmp.npy"
            np.save(tmp, np.asarray(getattr(self, name)))
            os.replace(tmp, folder / f"{name}.npy")
        meta = {"format": "kerasface.IdentityIndex/1", "root": self.root, "kind": self.kind, "names": self.names,
                "images": len(self), "identities": self.num_identities}
        tmp = folder / ".index.json.tmp"
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, folder / "index.json")
        return folder

    @classmethod
    def load(cls, folder: PathLike, mmap: bool = True) -> IdentityIndex:
        """Read an index written by :meth:`save`; ``mmap=True`` maps the arrays read-only (pages load on use)."""
        folder = Path(folder)
        meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        arrays = [np.load(folder / f"{n}.npy", mmap_mode="r" if mmap else None) for n in cls._ARRAYS]
        return cls(*arrays, meta["names"], root=meta["root"], kind=meta["kind"])

    def to_csv(self, path: PathLike, sep: str = ",") -> Path:
        """Write ``path<sep>identity`` lines (with a ``path<sep>label`` header)."""
        path = Path(path)
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"path{sep}label\n")
            for k, name in enumerate(self.names):
                for i in range(self.starts[k], self.starts[k + 1]):
                    f.write(f"{self.path(i)}{sep}{name}\n")
        return path

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_identities(self) -> int:
        """Number of identities (labels are ``0..num_identities-1``)."""
        return len(self.names)

    @property
    def counts(self) -> np.ndarray:
        """int64 ``[num_identities]``: images per identity."""
        return np.diff(self.starts)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of the index (paths, offsets, labels, starts)."""
        return int(self.blob.nbytes + self.offsets.nbytes + self.labels.nbytes + self.starts.nbytes)

    def path(self, i: int) -> str:
        """The path of entry ``i``."""
        return bytes(self.blob[self.offsets[i]:self.offsets[i + 1]]).decode("utf-8")

    def paths(self, rows: Iterable[int]) -> list[str]:
        """Paths of the entries ``rows``."""
        return [self.path(int(i)) for i in rows]

    def rows_of(self, identity: int | str) -> np.ndarray:
        """Entry rows of one identity (label or name)."""
        k = self.label_of(identity) if isinstance(identity, str) else int(identity)
        return np.arange(self.starts[k], self.starts[k + 1], dtype=np.int64)

    def label_of(self, name: str) -> int:
        """Label of identity ``name`` (``KeyError`` if absent)."""
        lookup = getattr(self, "_label_lookup", None)
        if lookup is None:
            lookup = self._label_lookup = {n: k for k, n in enumerate(self.names)}
        return lookup[name]

    def reader(self) -> Callable[[str], bytes]:
        """A thread-safe callable ``path -> bytes`` reading from this index's root."""
        if self.kind != "folder":
            if self._source is None:
                self._source = open_image_source(self.root)
            return self._source.read_bytes
        root = Path(self.root) if self.root is not None else None

        def read(rel: str) -> bytes:
            f = Path(rel) if root is None else root / rel
            with open(f, "rb") as fh:
                return fh.read()

        return read

    def close(self) -> None:
        """Close an open zip or pack (reopened on the next :meth:`reader`)."""
        if self._source is not None:
            self._source.close()
            self._source = None

    def __repr__(self) -> str:
        c = self.counts
        return (f"IdentityIndex(images={len(self)}, identities={self.num_identities}, "
                f"per_identity=[{c.min() if len(c) else 0}..{c.max() if len(c) else 0}], kind={self.kind!r}, "
                f"root={self.root!r})")

    # ------------------------------------------------------------------ subsets
    def take(self, labels: Iterable[int]) -> IdentityIndex:
        """A new index with the identities ``labels`` only (renumbered in name order)."""
        keep = np.unique(np.asarray(list(labels), dtype=np.int64))
        if len(keep) and (keep[0] < 0 or keep[-1] >= self.num_identities):
            raise ValueError(f"labels out of range [0, {self.num_identities})")
        if len(keep) == self.num_identities:  # everything kept: share the arrays
            out = IdentityIndex(self.blob, self.offsets, self.labels, self.names, root=self.root, kind=self.kind)
            out._source = self._source
            return out
        counts = self.counts[keep]
        rows = (np.concatenate([np.arange(self.starts[k], self.starts[k + 1], dtype=np.int64) for k in keep])
                if len(keep) else np.zeros(0, np.int64))
        blob, offsets = _gather_strings(self.blob, self.offsets, rows)
        new_labels = np.repeat(np.arange(len(keep), dtype=np.int32), counts)
        out = IdentityIndex(blob, offsets, new_labels, [self.names[k] for k in keep], root=self.root, kind=self.kind)
        out._source = self._source
        return out

    def filter(self, min_images: int = 1, max_images: int | None = None) -> IdentityIndex:
        """Identities with at least ``min_images`` (and at most ``max_images``) images."""
        c = self.counts
        ok = c >= min_images
        if max_images is not None:
            ok &= c <= max_images
        return self.take(np.flatnonzero(ok))

    def select(self, names: Iterable[str], missing: str = "ignore") -> IdentityIndex:
        """Identities named in ``names``; absent names are ignored or (``missing="error"``) raise ``KeyError``."""
        if missing not in ("ignore", "error"):
            raise ValueError(f"missing must be 'ignore' or 'error', got {missing!r}")
        keep = []
        for n in dict.fromkeys(names):
            try:
                keep.append(self.label_of(n))
            except KeyError:
                if missing == "error":
                    raise KeyError(f"identity {n!r} not in the index") from None
        return self.take(keep)

    def exclude(self, names: Iterable[str]) -> IdentityIndex:
        """All identities except those named in ``names``."""
        drop = set(names)
        return self.take(k for k, n in enumerate(self.names) if n not in drop)


def fold_identities(pairs: PathLike | Sequence[Pair] | Iterable[str], folds: Iterable[int] | None = None,
                    exclude_folds: Iterable[int] = ()) -> list[str]:
    """Sorted names of the people in ``folds`` of an LFW pairs list, minus anyone in ``exclude_folds``.

    ``pairs`` is a pairs file (or its lines) read with
    :func:`~kerasface.data.lfw.parse_pairs`, or parsed :class:`Pair` objects.
    Folds are numbered from 0 as in ``parse_pairs``: the official
    ``pairs.txt`` has folds 0..9, so "folds 1-9" are ``range(9)`` and "fold 10"
    is ``9``.  ``folds=None`` means every fold not excluded.  Example, training
    people that never appear in the held-out fold::

        train_names = fold_identities("pairs.txt", range(9), exclude_folds=[9])
        train_index = IdentityIndex.open("lfw.zip").select(train_names)
    """
    if isinstance(pairs, (str, os.PathLike)):
        pairs = parse_pairs(pairs)
    else:
        pairs = list(pairs)
        if pairs and not isinstance(pairs[0], Pair):
            pairs = parse_pairs(pairs)
    excluded_folds = set(int(f) for f in exclude_folds)
    wanted = None if folds is None else set(int(f) for f in folds)
    names: set[str] = set()
    banned: set[str] = set()
    for p in pairs:
        if p.fold in excluded_folds:
            banned.update((p.name1, p.name2))
        elif wanted is None or p.fold in wanted:
            names.update((p.name1, p.name2))
    return sorted(names - banned)
