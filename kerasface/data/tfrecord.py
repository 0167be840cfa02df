"""TFRecord shards of a face collection: :func:`pack` writes them, :func:`read_shards` streams them.

``kerasface pack SRC OUT --shards N`` turns a folder tree ``<identity>/<image>``
(aligned crops from ``kerasface align``, or raw images), a zip, or a file list
into ``OUT/shard-00000-of-0000N.tfrecord`` ... plus ``OUT/index.json``:

* one record per image: ``image`` (encoded bytes), ``label`` (int64, the
  :class:`~kerasface.data.identities.IdentityIndex` label of the same source:
  identities in name order, ``0..K-1``) and ``path`` (the image's relative path);
* ``image_size=None`` keeps the bytes of each JPEG and PNG file as they are
  (they are decoded once to check them) and stores every other format
  (PGM, TIFF, BMP, WebP, ...) as lossless PNG, which the reader decodes; an
  ``image_size`` re-encodes the centre crop (``center_crop``) at that size as
  JPEG (``fmt="jpg"``) or lossless PNG;
* records are serialised deterministically: two packs of the same source with
  the same settings are byte for byte the same;
* images are spread over the shards in a seeded random order, so every shard
  holds many identities and a reader needs no huge shuffle buffer;
* undecodable or missing images are skipped and counted (``index.json``
  ``"skipped"``), never written;
* the ``pairs*.txt`` lists next to ``SRC`` (in it, for a folder) are copied
  into ``OUT``, so ``--data OUT`` finds them as ``--data SRC`` did.

Resumable and atomic like the aligner (:mod:`kerasface.data.align_run`): each
shard is written to a temporary file and renamed into place, then a small
``shard-...json`` sidecar records its record count and size; a rerun with the
same settings skips the shards whose sidecar matches the file and redoes the
others (a killed run's partial shard, a deleted shard); ``pack_config.json``
holds the settings, and a rerun with different ones is refused with the
differences listed. ``index.json`` is written last (identity names, per
identity counts, shard list with sizes, format version).

A finished pack is also an image source: :func:`~kerasface.data.sources.open_image_source`
opens the folder as a :class:`~kerasface.data.sources.ShardSource` (images by the relative
paths recorded here), so every trainer and ``kerasface evaluate`` take it as ``--data``. The
folder's format (names, ``index.json``, a TensorFlow-free record reader) is
:mod:`kerasface.data.records`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..config import check_command_setting
from ..io import atomic_path, first_line, write_json
from ..ops import normalize_faces
from .identities import IdentityIndex
from .images import CorruptImageError, TextProgress, crop_resize, decode_image, image_format
from .records import CONFIG_NAME, FORMAT_VERSION, INDEX_NAME, read_index, shard_name

logger = logging.getLogger("kerasface.data")

__all__ = ["PackSummary", "pack", "read_shards", "parse_example"]

_SKIPPED_EXAMPLES = 20
#: Formats stored as they are with ``image_size=None`` (what :func:`read_shards` decodes); any other
#: format is re-encoded as lossless PNG.
READER_FORMATS = ("jpeg", "png")


@dataclass
class PackSummary:
    out: Path
    shards: int
    written: int = 0  # records in all shards
    packed: int = 0  # images read by this run (the others were in finished shards)
    skipped_shards: int = 0  # finished by an earlier run
    corrupt: int = 0
    missing: int = 0
    seconds: float = 0.0
    skipped_examples: list = field(default_factory=list)
    pairs_lists: list = field(default_factory=list)  # pairs*.txt copied next to the shards

    def format(self) -> str:
        rate = self.packed / self.seconds if self.seconds > 0 else 0.0
        lines = [f"kerasface pack: {self.written} images in {self.shards} shard(s) under {self.out} "
                 f"({self.skipped_shards} shard(s) already finished, {self.seconds:.1f} s, {rate:.0f} images/s)"]
        if self.corrupt or self.missing:
            lines.append(f"skipped: {self.corrupt} undecodable, {self.missing} missing image(s) "
                         f"(index.json lists the first {len(self.skipped_examples)})")
        if self.pairs_lists:
            lines.append(f"copied the pairs list(s) {', '.join(self.pairs_lists)} next to the shards")
        return "\n".join(lines)


# --------------------------------------------------------------------------- writing
def _tf_example(image: bytes, label: int, path: str) -> bytes:
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "path": tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")])),
    }
    # deterministic: the feature map in one order, so two packs of the same folder are byte for byte the same
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def _encoder(image_size: int | None, center_crop: float, fmt: str,
             jpeg_quality: int) -> Callable[[bytes, str], bytes]:
    """``(file bytes, name) -> record bytes``; raises CorruptImageError for an undecodable image."""
    def encode(data: bytes, name: str) -> bytes:
        img = decode_image(data, name)  # raises CorruptImageError
        if image_size is None:
            if image_format(data) in READER_FORMATS:
                return data
            # PGM, TIFF, WebP, BMP, ...: OpenCV reads them, the shard reader (tf.io.decode_image) may not;
            # stored as lossless PNG of the decoded pixels
            ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if not ok:
                raise CorruptImageError(f"cannot re-encode {name!r} as png")
            return buf.tobytes()
        crop = crop_resize(img, image_size, center_crop)
        bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)
        if fmt == "png":
            ok, buf = cv2.imencode(".png", bgr)
        else:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
        if not ok:
            raise CorruptImageError(f"cannot encode {name!r} as {fmt}")
        return buf.tobytes()

    return encode


@contextlib.contextmanager
def _writing(path: Path):
    """TensorFlow's write errors (a full disk is ``ResourceExhaustedError``) as ``OSError`` naming ``path``."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError as e:
        raise OSError(f"cannot write {path} (folder {path.parent}): {type(e).__name__}: "
                      f"{first_line(e.message)}") from None


def _shard_rows(n: int, shards: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[s::shards] for s in range(shards)]


def _fingerprint(index: IdentityIndex) -> str:
    """crc32 of every path and label: the same source gives the same shards."""
    crc = zlib.crc32(np.ascontiguousarray(index.blob).tobytes())
    crc = zlib.crc32(np.ascontiguousarray(index.offsets).tobytes(), crc)
    return f"{zlib.crc32(np.ascontiguousarray(index.labels).tobytes(), crc):08x}"


def _shard_done(out: Path, name: str) -> dict | None:
    """The sidecar of a finished shard whose file still matches it, else None."""
    side, f = out / (name[:-len(".tfrecord")] + ".json"), out / name
    if not (side.is_file() and f.is_file()):
        return None
    try:
        info = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return info if info.get("bytes") == f.stat().st_size else None


def _copy_pairs_lists(src: Path, out: Path) -> list[str]:
    """Copy the ``pairs*.txt`` lists next to ``src`` (in it, for a folder) into ``out``, so that the pack
    folder finds its pairs lists as the source folder did (``--data OUT`` without ``--pairs``)."""
    folder = src if src.is_dir() else src.parent
    copied = []
    for f in sorted(folder.glob("pairs*.txt")):
        if f.is_file():
            with atomic_path(out / f.name) as tmp:
                shutil.copyfile(f, tmp)
            copied.append(f.name)
    return copied


def _remove_stale(out: Path) -> int:
    gone = 0
    for p in out.glob(".shard-*"):
        if p.is_file():
            p.unlink()
            gone += 1
    return gone


def pack(src, out, shards: int = 8, image_size: int | None = None, center_crop: float = 1.0,
         fmt: str = "jpg", jpeg_quality: int = 95, seed: int = 0, min_images: int = 1,
         workers: int | None = None, progress: bool = True, limit: int | None = None) -> PackSummary:
    """Write the images of ``src`` into ``shards`` TFRecord files under ``out`` (see the module docstring).

    ``src``: folder tree, zip, ``.csv`` file list or saved index (anything
    :meth:`IdentityIndex.open` reads), or an :class:`IdentityIndex`.
    ``min_images``: leave out identities with fewer images (labels are then
    those of ``index.filter(min_images)``). ``limit``: only the first N images
    (testing). Returns a :class:`PackSummary`.
    """
    t0 = time.perf_counter()
    if shards < 1:
        raise ValueError(f"--shards must be >= 1, got {shards}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"--image-size must be positive, got {image_size}")
    if fmt not in ("jpg", "png"):
        raise ValueError(f"format must be jpg or png, got {fmt!r}")
    check_command_setting("center_crop", center_crop, flag="center_crop")
    check_command_setting("jpeg_quality", jpeg_quality)
    check_command_setting("limit", limit)
    if isinstance(src, IdentityIndex):
        index, src_name = src, src.root or "<index>"
    else:
        if not Path(src).exists():
            raise FileNotFoundError(f"SRC {src}: no such file or folder")
        if Path(src).is_file():
            with open(src, "rb") as f:
                src_format = image_format(f.read(64))  # not ``fmt``: that is the crops' encoding
            if src_format is not None:
                raise ValueError(f"SRC {src} is a {src_format} image, not a folder tree, zip or file list")
        index, src_name = IdentityIndex.open(src), str(Path(src).resolve())
    if min_images > 1:
        index = index.filter(min_images=min_images)
    n = len(index) if limit is None else min(len(index), int(limit))
    if n == 0:
        raise ValueError(f"SRC {src_name}: no images found")
    if shards > n:
        raise ValueError(f"--shards {shards} is more than the {n} images")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create OUT {out}: {e.strerror or e}") from None

    settings = {"format_version": FORMAT_VERSION, "source": src_name, "source_fingerprint": _fingerprint(index),
                "images": n, "identities": index.num_identities, "shards": shards, "image_size": image_size,
                "center_crop": center_crop if image_size is not None else None,
                "encoding": fmt if image_size is not None else "original",
                "jpeg_quality": jpeg_quality if image_size is not None and fmt == "jpg" else None,
                "seed": seed, "min_images": min_images}
    cfg_file = out / CONFIG_NAME
    if cfg_file.is_file():
        old = json.loads(cfg_file.read_text())
        diff = [f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in sorted(set(old) | set(settings))
                if old.get(k) != settings.get(k)]
        if diff:
            raise ValueError(f"{out} holds shards packed with other settings ({'; '.join(diff)}); "
                             "rerun with the same settings to resume, or choose another OUT")
    else:
        write_json(cfg_file, settings)
    stale = _remove_stale(out)
    if stale:
        logger.info("removed %d temporary file(s) of a killed run", stale)

    encode = _encoder(image_size, center_crop, fmt, jpeg_quality)
    read = index.reader()
    plan = _shard_rows(n, shards, seed)
    summary = PackSummary(out=out, shards=shards)
    bar = TextProgress(n, "pack", enabled=progress)
    done_images = 0
    shard_info = []
    per_label = np.zeros(index.num_identities, np.int64)
    workers = workers or max(1, min(8, os.cpu_count() or 1))

    def load(row: int):
        rel = index.path(int(row))
        try:
            return row, rel, encode(read(rel), rel), None
        except CorruptImageError as e:
            return row, rel, None, ("corrupt", str(e))
        except (FileNotFoundError, KeyError) as e:
            return row, rel, None, ("missing", str(e))

    import tensorflow as tf

    try:
        with ThreadPoolExecutor(workers) as pool:
            for s, rows in enumerate(plan):
                name = shard_name(s, shards)
                info = _shard_done(out, name)
                if info is not None:
                    summary.skipped_shards += 1
                    done_images += len(rows)
                    bar.update(done_images)
                else:
                    info = {"file": name, "records": 0, "corrupt": 0, "missing": 0, "skipped": [], "labels": {}}
                    with _writing(out / name), atomic_path(out / name) as tmp:
                        with tf.io.TFRecordWriter(str(tmp)) as w:
                            for row, rel, data, bad in pool.map(load, rows):
                                done_images += 1
                                summary.packed += 1
                                bar.update(done_images)
                                if bad is not None:
                                    info[bad[0]] += 1
                                    if len(info["skipped"]) < _SKIPPED_EXAMPLES:
                                        info["skipped"].append({"path": rel, "reason": bad[1]})
                                    continue
                                label = int(index.labels[row])
                                w.write(_tf_example(data, label, rel))
                                info["records"] += 1
                                info["labels"][str(label)] = info["labels"].get(str(label), 0) + 1
                    info["bytes"] = (out / name).stat().st_size
                    # the sidecar last: a shard without one (or with another size) is redone by the next run
                    write_json(out / (name[:-len(".tfrecord")] + ".json"), info)
                shard_info.append(info)
    finally:
        index.close()

    for info in shard_info:
        summary.written += info["records"]
        summary.corrupt += info["corrupt"]
        summary.missing += info["missing"]
        summary.skipped_examples.extend(info["skipped"])
        for k, c in info["labels"].items():
            per_label[int(k)] += c
    summary.skipped_examples = summary.skipped_examples[:_SKIPPED_EXAMPLES]
    write_json(out / INDEX_NAME, {
        "format_version": FORMAT_VERSION,
        "settings": settings,
        "num_images": summary.written,
        "num_identities": index.num_identities,
        "names": list(index.names),
        "counts": per_label.tolist(),  # records per label (label = position in names)
        "shards": [{"file": i["file"], "records": i["records"], "bytes": i["bytes"]} for i in shard_info],
        "image_size": image_size,
        "encoding": settings["encoding"],
        "skipped": {"corrupt": summary.corrupt, "missing": summary.missing, "examples": summary.skipped_examples},
    })
    if not isinstance(src, IdentityIndex):
        summary.pairs_lists = _copy_pairs_lists(Path(src), out)
    summary.seconds = time.perf_counter() - t0
    return summary


# --------------------------------------------------------------------------- reading
_FEATURES = None


def parse_example(record, image_size: int | None = None, with_paths: bool = False):
    """One serialised record -> ``(uint8 image [H, W, 3], int32 label)`` (``+ path`` with ``with_paths``);
    with ``image_size``, resized (area) to ``image_size`` x ``image_size`` when the stored image has another
    size."""
    import tensorflow as tf

    global _FEATURES
    if _FEATURES is None:
        _FEATURES = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
                     "path": tf.io.FixedLenFeature([], tf.string, default_value="")}
    ex = tf.io.parse_single_example(record, _FEATURES)
    # JPEG with the accurate integer IDCT: pixel for pixel what OpenCV (kerasface's decoder elsewhere) gives;
    # TensorFlow's default IDCT differs by ~1 grey level on average (up to 7) on LFW's JPEGs.
    img = tf.cond(tf.io.is_jpeg(ex["image"]),
                  lambda: tf.io.decode_jpeg(ex["image"], channels=3, dct_method="INTEGER_ACCURATE"),
                  lambda: tf.io.decode_image(ex["image"], channels=3, expand_animations=False))
    if image_size is not None:
        s = int(image_size)
        shape = tf.shape(img)
        img = tf.cond(tf.logical_and(tf.equal(shape[0], s), tf.equal(shape[1], s)),
                      lambda: img,
                      lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img, [s, s], method="area")), 0, 255),
                                      tf.uint8))
        img = tf.ensure_shape(img, [s, s, 3])
    if with_paths:
        return img, tf.cast(ex["label"], tf.int32), ex["path"]
    return img, tf.cast(ex["label"], tf.int32)


def read_shards(out, image_size: int | None = None, batch_size: int | None = None, shuffle_buffer: int = 0,
                cache=False, seed: int | None = None, normalize: bool = False, augment=None,
                repeat: bool = False, drop_remainder: bool = False, cycle_length: int | None = None,
                files: list | None = None, with_paths: bool = False):
    """A ``tf.data.Dataset`` of ``(image, label)`` from the shards of ``out``.

    Pipeline: shard file names (shuffled when ``shuffle_buffer``, seeded) ->
    ``interleave`` of ``TFRecordDataset``s (``cycle_length`` files at once,
    parallel) -> parallel parse + decode (+ resize to ``image_size`` when the
    stored size differs; ``None`` needs equal sizes to batch) -> ``cache``
    (``True``: in memory, a string: that file prefix) -> ``shuffle`` ->
    ``repeat`` -> ``augment`` (a function of a uint8 image and a seed) ->
    ``normalize`` (float32 ``(x - 127.5) / 128``) -> ``batch`` -> ``prefetch``.
    Images are uint8 ``[H, W, 3]`` unless ``normalize``; labels int32, the
    ``IdentityIndex`` labels of the source (``index.json`` ``"names"``);
    ``with_paths`` adds each image's relative path (a string tensor) as a
    third element (``augment`` / ``normalize`` then do not apply).

    With ``seed`` the order is reproducible (``deterministic`` interleave);
    without it tf.data may trade order for speed. For a multiworker run pass
    the dataset through ``Runtime.shard(ds, source="files")``: each worker
    then reads its own shard files (pack at least as many shards as workers).
    """
    import tensorflow as tf

    idx = read_index(out)
    names = files or [s["file"] for s in idx["shards"]]
    paths = [str(Path(out) / f) for f in names]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"shard(s) missing: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    AUTOTUNE = tf.data.AUTOTUNE
    deterministic = seed is not None
    ds = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle_buffer:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
                       cycle_length=cycle_length or min(len(paths), 4), block_length=1,
                       num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    ds = ds.map(lambda r: parse_example(r, image_size, with_paths), num_parallel_calls=AUTOTUNE,
                deterministic=deterministic)
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if with_paths and (augment is not None or normalize):
        raise ValueError("with_paths=True reads images as stored: no augment / normalize")
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if normalize:
        ds = ds.map(lambda x, y: (normalize_faces(x), y), num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE,
                      deterministic=deterministic)
    return ds.prefetch(AUTOTUNE)
