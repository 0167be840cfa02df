"""Labelled pairs of image paths in a CSV file, and :func:`read_pairs_list` for either kind of list.

A pairs CSV names any two images, not only LFW's ``Name/Name_0001.jpg``::

    img1,img2,label
    alice/1.jpg,alice/2.jpg,1
    alice/1.jpg,bob/7.png,different

* one pair per row: ``img1,img2,label`` and optionally a fourth column ``fold`` (an integer:
  pairs of one fold are held out together by the k-fold accuracy, as LFW's ``pairs.txt`` folds are);
* an optional header row, recognised by a third field that is not a label; it names the columns
  (``img1``, ``img2``, ``label``, optionally ``fold``, in any order; other columns are ignored);
* labels: ``1``/``0``, ``same``/``different``, ``true``/``false`` (any case);
* paths are relative to the image root (the CSV's folder, or ``--data`` when given) and use ``/``
  or ``\\``; absolute paths and ``..`` are refused, so that a list never reads outside its root;
* blank lines and lines starting with ``#`` are skipped; a UTF-8 byte-order mark is accepted.

A bad row raises ``ValueError`` naming the file and the line. Pairs come back as
:class:`PathPair`, which has the fields the evaluation reads from an LFW
:class:`~kerasface.data.lfw.Pair` (``path1``, ``path2``, ``same``, ``fold``).

This module depends on the standard library only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .lfw import Pair, parse_pairs, read_list_text

__all__ = ["LABELS", "PathPair", "is_pairs_csv", "parse_pairs_csv", "read_pairs_list"]

#: label spellings of a pairs CSV (lower case) -> same person
LABELS = {"1": True, "0": False, "same": True, "different": False, "true": True, "false": False}
_COLUMNS = ("img1", "img2", "label")


@dataclass(frozen=True)
class PathPair:
    """One labelled pair of image paths (relative to the image root); ``fold`` as the CSV gives it (0 without)."""

    path1: str
    path2: str
    same: bool
    fold: int = 0

    @property
    def name1(self) -> str:
        """How the first image is named in reports: its path."""
        return self.path1

    @property
    def name2(self) -> str:
        return self.path2

    @property
    def fold_number(self) -> int:
        """The fold as the list numbers it (the CSV's own number)."""
        return self.fold


def is_pairs_csv(path) -> bool:
    """A ``.csv`` file, or one whose first non-blank line has a comma (LFW lists are tab/space separated)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return True
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            for line in f:
                if line.strip():
                    return "," in line
    except OSError:
        return False
    return False


def read_pairs_list(path, is_csv: bool | None = None) -> list[Pair] | list[PathPair]:
    """The pairs of a pairs list: a CSV of labelled paths, else an LFW list. ``is_csv``: the format when the
    caller has decided it already (so that a list is sniffed once), else :func:`is_pairs_csv` decides."""
    if is_csv is None:
        is_csv = is_pairs_csv(path)
    return parse_pairs_csv(path) if is_csv else parse_pairs(path)


def _label(field: str, where: str) -> bool:
    value = LABELS.get(field.strip().lower())
    if value is None:
        raise ValueError(f"{where}: label must be 1/0, same/different or true/false, got {field!r}")
    return value


def _relpath(field: str, column: str, where: str) -> str:
    rel = field.strip().replace("\\", "/")
    if not rel:
        raise ValueError(f"{where}: empty {column}")
    if any(ord(c) < 32 or ord(c) == 127 for c in rel):
        raise ValueError(f"{where}: {column} {field!r} contains a control character")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError(f"{where}: {column} {field!r} is absolute; paths are relative to the image root "
                         "(the CSV's folder, or --data)")
    if ".." in rel.split("/"):
        raise ValueError(f"{where}: {column} {field!r} climbs out with '..'; paths are relative to the image root "
                         "(the CSV's folder, or --data)")
    return rel


def _fold(field: str, where: str) -> int:
    try:
        return int(field.strip())
    except ValueError:
        raise ValueError(f"{where}: fold must be an integer, got {field!r}") from None


def parse_pairs_csv(path) -> list[PathPair]:
    """The pairs of a pairs CSV (see the module docstring); ``ValueError`` naming file and line for a bad row."""
    path = Path(path)
    text = read_list_text(path)
    columns = None
    pairs: list[PathPair] = []
    for lineno, row in _rows(path, text):
        if not any(f.strip() for f in row) or row[0].lstrip().startswith("#"):
            continue
        where = f"{path}, line {lineno}"
        if columns is None and not pairs and len(row) >= 3 and row[2].strip().lower() not in LABELS:
            columns = _header(row, where)
            continue
        if columns is not None:
            if len(row) != columns["width"]:
                raise ValueError(f"{where}: expected {columns['width']} fields as the header names, got {len(row)}")
            f1, f2, lab = row[columns["img1"]], row[columns["img2"]], row[columns["label"]]
            fold = row[columns["fold"]] if "fold" in columns else None
        elif len(row) in (3, 4):
            f1, f2, lab = row[:3]
            fold = row[3] if len(row) == 4 else None
        else:
            raise ValueError(f"{where}: expected 3 fields (img1,img2,label) or 4 (img1,img2,label,fold), "
                             f"got {len(row)}: {','.join(row)!r}")
        pairs.append(PathPair(_relpath(f1, "img1", where), _relpath(f2, "img2", where), _label(lab, where),
                              _fold(fold, where) if fold is not None else 0))
    if not pairs:
        raise ValueError(f"{path}: no pairs in the list")
    return pairs


def _header(row: list[str], where: str) -> dict:
    names = [f.strip().lower() for f in row]
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{where}: a header must name the columns img1, img2 and label (and optionally fold); "
                         f"{', '.join(missing)} missing in {','.join(row)!r} (a first row of data needs a "
                         "label 1/0, same/different or true/false in its third field)")
    dupes = sorted({n for n in names if names.count(n) > 1 and n in (*_COLUMNS, "fold")})
    if dupes:
        raise ValueError(f"{where}: header names {', '.join(dupes)} more than once")
    columns = {c: names.index(c) for c in (*_COLUMNS, "fold") if c in names}
    columns["width"] = len(row)
    return columns


def _rows(path: Path, text: str):
    """``(line number, fields)`` of every CSV row (a row's number is the line it starts on)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise ValueError(f"{path}, line {reader.line_num}: not a valid CSV row ({e})") from None
        yield start, row
        start = reader.line_num + 1
