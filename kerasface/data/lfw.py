"""The official LFW pairs lists.

:func:`parse_pairs` reads the official ``pairs.txt`` / ``pairsDevTrain.txt`` /
``pairsDevTest.txt`` lists and :func:`resolve_pairs` checks them against an
image source (:mod:`kerasface.data.sources`: folder, zip or pack shards),
reporting (never silently dropping) pairs whose images are missing.

This module depends on the standard library only.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .sources import ImageSource, open_image_source

logger = logging.getLogger("kerasface.data")

__all__ = [
    "lfw_relpath",
    "Pair",
    "parse_pairs",
    "read_list_text",
    "resolve_pairs",
]


def lfw_relpath(name: str, idx: int) -> str:
    """Relative path of image ``idx`` of identity ``name``: ``"Name/Name_%04d.jpg"``."""
    return f"{name}/{name}_{int(idx):04d}.jpg"


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

    @property
    def fold_number(self) -> int:
        """The fold as the LFW documentation numbers it: 1 to 10 (``fold`` counts from 0)."""
        return self.fold + 1


def read_list_text(path) -> str:
    """The text of a pairs list (LFW format or CSV): UTF-8, a byte-order mark (Notepad's UTF-8) accepted;
    a folder, a missing file or other bytes are one clear error naming the file (and the line)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"pairs list {str(p)!r} is a folder, not a file")
    if not p.is_file():
        raise FileNotFoundError(f"pairs list not found: {str(p)!r}")
    data = p.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{p}, line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "save the list as UTF-8") from None


def _read_lines(path_or_lines) -> tuple[str, list[str]]:
    if isinstance(path_or_lines, (str, os.PathLike)):
        return str(path_or_lines), read_list_text(path_or_lines).splitlines()
    lines = [str(line).rstrip("\r\n") for line in path_or_lines]
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    return "<lines>", lines


def _int(field: str, where: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise ValueError(f"{where}: expected an integer, got {field!r}") from None


def parse_pairs(path_or_lines: str | os.PathLike | Iterable[str]) -> list[Pair]:
    """Parse an official LFW pairs list (a file path or an iterable of lines).

    Header ``"10\\t300"`` (View 2): 10 folds, each 300 matched lines
    ``Name n1 n2`` then 300 mismatched lines ``Name1 n1 Name2 n2``; folds are
    numbered 0..9.  Header ``"N"`` (View 1): N matched then N mismatched lines,
    all in fold 0.  Fields may be separated by tabs or spaces; blank lines are
    ignored.  Raises ``ValueError`` naming file and line number for a malformed
    line, and when the counts differ from what the header promises.
    """
    src, lines = _read_lines(path_or_lines)
    numbered = [(i + 1, line.split()) for i, line in enumerate(lines) if line.strip()]
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
            raise ValueError(f"{where}: expected 3 fields (matched) or 4 fields (mismatched), "
                             f"got {len(f)}: {' '.join(f)!r}")

    expected = n_folds * fold_size
    if len(pairs) != expected:
        raise ValueError(f"{src}: header promises {n_folds} fold(s) x ({per} matched + {per} mismatched) = "
                         f"{expected} pairs, found {len(pairs)}")
    for fold in range(n_folds):
        chunk = pairs[fold * fold_size:(fold + 1) * fold_size]
        n_same = sum(p.same for p in chunk)
        if n_same != per:
            raise ValueError(f"{src}: fold {fold} has {n_same} matched and {fold_size - n_same} mismatched pairs, "
                             f"header promises {per} + {per}")
    return pairs


def _other_normalisation(source: ImageSource, names: Sequence[str], checked: int = 100) -> str:
    """A note when missing names exist in ``source`` spelled in another Unicode normalisation form (a list
    in NFC against folders in NFD print identically), else ``""``."""
    found = []
    for rel in names[:checked]:
        for form in ("NFC", "NFD"):
            alt = unicodedata.normalize(form, rel)
            if alt != rel and source.exists(alt):
                found.append((rel, form))
                break
    if not found:
        return ""
    rel, form = found[0]
    return (f"; {len(found)} of them exist spelled in Unicode {form} (e.g. {rel!r}), the list spells them "
            f"otherwise: they look the same but are different names; rename the folders or rewrite the list "
            f"in {form}")


def resolve_pairs(pairs: Sequence[Pair], source: ImageSource | str | os.PathLike,
                  on_missing: str = "skip") -> tuple[list[Pair], list[tuple[Pair, str]]]:
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
        msg = (f"{n_dropped} of {len(pairs)} pairs reference {len(names)} image(s) missing from {source!r}; "
               f"first: {', '.join(names[:5])}") + _other_normalisation(source, names)
        if on_missing == "error":
            raise FileNotFoundError(msg)
        logger.warning("%s -- these pairs are skipped", msg)
    return kept, missing
