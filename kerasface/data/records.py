"""The folder ``kerasface pack`` writes, read with the standard library only.

A pack folder holds ``shard-00000-of-0000N.tfrecord`` files, ``index.json``
(written last: identity names, counts, the shard list) and ``pack_config.json``
(the settings). Each shard is a TFRecord file: records of

* ``uint64`` length, ``uint32`` masked CRC of the length, ``length`` bytes of
  data, ``uint32`` masked CRC of the data (all little-endian);

and each record's data is a serialised ``tf.train.Example`` with the features
``image`` (encoded bytes), ``label`` (int64) and ``path`` (the image's relative
path, UTF-8).

:func:`scan_shard` walks a shard and returns, per record, its path, label and
where the image bytes lie in the file: it reads the protocol-buffer headers and
seeks past the image bytes, so indexing a pack reads a few hundred bytes per
image, not the images. TensorFlow is not needed (the CRCs are not checked; the
``tf.data`` reader :func:`kerasface.data.tfrecord.read_shards` checks them).
The writer is :func:`kerasface.data.tfrecord.pack`.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["FORMAT_VERSION", "INDEX_NAME", "CONFIG_NAME", "shard_name", "read_index", "is_pack_folder",
           "ShardRecord", "scan_shard"]

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
CONFIG_NAME = "pack_config.json"

_HEADER = 12  # uint64 length + uint32 CRC of the length
_FOOTER = 4  # uint32 CRC of the data
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5  # protocol-buffer wire types


def shard_name(i: int, n: int) -> str:
    """File name of shard ``i`` of ``n``."""
    return f"shard-{i:05d}-of-{n:05d}.tfrecord"


def read_index(out: str | os.PathLike) -> dict:
    """``index.json`` of a finished pack (``FileNotFoundError`` / ``ValueError`` with a plain message)."""
    f = Path(out) / INDEX_NAME
    if not f.is_file():
        raise FileNotFoundError(f"{out}: no {INDEX_NAME} (not a kerasface pack, or the pack did not finish; "
                                "rerun `kerasface pack` with the same settings)")
    idx = json.loads(f.read_text())
    if idx.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{f}: format version {idx.get('format_version')!r}, this kerasface reads {FORMAT_VERSION}")
    return idx


def is_pack_folder(folder: str | os.PathLike) -> bool:
    """True for a folder ``kerasface pack`` wrote to (finished or not): ``pack_config.json``, or an
    ``index.json`` that lists shards (a saved :class:`~kerasface.data.identities.IdentityIndex` has
    an ``index.json`` too, without shards)."""
    p = Path(folder)
    if (p / CONFIG_NAME).is_file():
        return True
    f = p / INDEX_NAME
    if not f.is_file():
        return False
    try:
        meta = json.loads(f.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "shards" in meta and "format_version" in meta


@dataclass(frozen=True)
class ShardRecord:
    """One record of a shard: the image's relative ``path``, its ``label`` and its encoded bytes at
    ``offset`` (``length`` bytes) in the shard file."""

    path: str
    label: int
    offset: int
    length: int


def _varint(f: BinaryIO) -> int:
    shift = value = 0
    while True:
        b = f.read(1)
        if not b:
            raise EOFError("truncated varint")
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7


def _fields(f: BinaryIO, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The fields of the message in bytes ``[start, end)`` of ``f``: ``(number, wire type, a, b)`` with
    ``(offset, length)`` of a length-delimited value and ``(value, 0)`` of a varint; payloads are skipped."""
    out = []
    f.seek(start)
    pos = start
    while pos < end:
        key = _varint(f)
        number, wire = key >> 3, key & 7
        if wire == _LEN:
            n = _varint(f)
            at = f.tell()
            out.append((number, wire, at, n))
            f.seek(at + n)
        elif wire == _VARINT:
            out.append((number, wire, _varint(f), 0))
        elif wire in (_I64, _I32):
            f.seek(8 if wire == _I64 else 4, os.SEEK_CUR)
        else:
            raise ValueError(f"unsupported protocol-buffer wire type {wire}")
        pos = f.tell()
    if pos != end:
        raise ValueError("a field runs past the end of its message")
    return out


def _int64s(f: BinaryIO, fields) -> list[int]:
    values = []
    for number, wire, a, n in fields:
        if number != 1:
            continue
        if wire == _VARINT:
            values.append(a)
        elif wire == _LEN:  # packed
            f.seek(a)
            while f.tell() < a + n:
                values.append(_varint(f))
    return [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _example_features(f: BinaryIO, start: int, length: int) -> dict:
    """``{name: ("bytes", [(offset, length), ...]) or ("int64", [values])}`` of a serialised Example."""
    features: dict = {}
    for number, wire, a, n in _fields(f, start, start + length):  # Example.features = 1
        if number != 1 or wire != _LEN:
            continue
        for number2, wire2, ea, en in _fields(f, a, a + n):  # Features.feature = 1 (map entries)
            if number2 != 1 or wire2 != _LEN:
                continue
            key, value = None, None
            for number3, wire3, va, vn in _fields(f, ea, ea + en):  # entry: key = 1, value = 2
                if number3 == 1 and wire3 == _LEN:
                    f.seek(va)
                    key = f.read(vn).decode("utf-8")
                elif number3 == 2 and wire3 == _LEN:
                    value = (va, vn)
            if key is None or value is None:
                continue
            for kind, wire4, la, ln in _fields(f, value[0], value[0] + value[1]):  # Feature: 1 bytes, 3 int64
                if wire4 != _LEN:
                    continue
                inner = _fields(f, la, la + ln)
                if kind == 1:
                    features[key] = ("bytes", [(a5, n5) for num5, w5, a5, n5 in inner if num5 == 1 and w5 == _LEN])
                elif kind == 3:
                    features[key] = ("int64", _int64s(f, inner))
    return features


def scan_shard(path: str | os.PathLike) -> list[ShardRecord]:
    """Every record of the shard file ``path`` as a :class:`ShardRecord` (in file order).

    Raises ``ValueError`` naming the shard and the record for a truncated file
    or a record without an ``image``, ``label`` or ``path`` feature.
    """
    path = Path(path)
    size = path.stat().st_size
    records = []
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            f.seek(pos)
            head = f.read(_HEADER)
            where = f"{path}, record {len(records)} (byte {pos})"
            if len(head) < _HEADER:
                raise ValueError(f"{where}: truncated record header (a partial shard?)")
            (length,) = struct.unpack("<Q", head[:8])
            start = pos + _HEADER
            if start + length + _FOOTER > size:
                raise ValueError(f"{where}: the record runs past the end of the file (a partial shard?)")
            try:
                feats = _example_features(f, start, length)
            except (EOFError, ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"{where}: not a tf.train.Example ({e})") from None
            kinds = {"image": "bytes", "label": "int64", "path": "bytes"}
            lacking = [k for k, kind in kinds.items() if feats.get(k, (None, []))[0] != kind or not feats[k][1]]
            if lacking:
                raise ValueError(f"{where}: no {' / '.join(lacking)} feature; an image source needs each image's "
                                 "bytes, label and relative path (pack with `kerasface pack` to get all three)")
            p_off, p_len = feats["path"][1][0]
            f.seek(p_off)
            rel = f.read(p_len).decode("utf-8")
            if not rel:
                raise ValueError(f"{where}: empty path; an image source addresses images by their relative path")
            offset, n = feats["image"][1][0]
            records.append(ShardRecord(rel, int(feats["label"][1][0]), offset, n))
            pos = start + length + _FOOTER
    return records
