"""A `kerasface pack` folder as an image source: the bundled sample packed, then read like the folder it came from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kerasface.data import (
    ChunkedLoader,
    IdentityIndex,
    PairData,
    ShardSource,
    open_image_source,
    parse_pairs,
    resolve_pairs,
)
from kerasface.data.images import decode_image, read_face
from kerasface.data.records import INDEX_NAME, scan_shard, shard_name
from kerasface.data.tfrecord import pack, read_shards

SIZE = 48


@pytest.fixture(scope="module")
def folder(sample_dir):
    return open_image_source(sample_dir)


@pytest.fixture(scope="module")
def packed_raw(sample_dir, tmp_path_factory):
    """The whole bundled sample, original bytes, in 3 shards."""
    out = tmp_path_factory.mktemp("pack") / "raw"
    pack(sample_dir, out, shards=3, progress=False)
    return out


@pytest.fixture(scope="module")
def packed_jpg(sample_dir, tmp_path_factory):
    """The sample re-encoded by pack as SIZE x SIZE JPEG centre crops."""
    out = tmp_path_factory.mktemp("pack") / "jpg"
    pack(sample_dir, out, shards=2, image_size=SIZE, fmt="jpg", progress=False)
    return out


def test_open_image_source_recognises_a_pack_folder(packed_raw, folder):
    src = open_image_source(packed_raw)
    assert isinstance(src, ShardSource) and src.kind == "shards"
    rels = folder.list_images()
    assert src.list_images() == rels  # the relative paths pack recorded, every image once
    assert all(src.exists(r) for r in rels) and not src.exists("Nobody/Nobody_0001.jpg")
    for rel in rels:
        assert src.read_bytes(rel) == folder.read_bytes(rel)  # original bytes: identical files
        assert src.identity(rel) == rel.split("/", 1)[0]
    for rel in rels[:20]:
        np.testing.assert_array_equal(read_face(src, rel, SIZE), read_face(folder, rel, SIZE))
    with pytest.raises(FileNotFoundError, match="Nobody_0001.jpg"):
        src.read_bytes("Nobody/Nobody_0001.jpg")
    src.close()
    assert src.read_bytes(rels[0]) == folder.read_bytes(rels[0])  # reopens after close


def test_reencoded_crops_decode_as_stored_and_close_to_the_source(packed_jpg, folder):
    src = open_image_source(packed_jpg)
    assert src.stored_size == SIZE and src.encoding == "jpg"
    stored = {p.numpy().decode(): x.numpy() for x, _, p in read_shards(packed_jpg, with_paths=True, seed=0)}
    assert sorted(stored) == src.list_images() == folder.list_images()
    rels = src.list_images()[:40]
    for rel, other in zip(rels, rels[1:] + rels[:1]):
        img = decode_image(src.read_bytes(rel), rel)
        np.testing.assert_array_equal(img, stored[rel])  # the bytes pack stored, decoded the same way
        assert img.shape == (SIZE, SIZE, 3)
        # JPEG at 48 px (4:2:0 chroma) is lossy: a few grey levels from the source crop, far from another face's
        own = np.abs(img - read_face(folder, rel, SIZE).astype(np.float32)).mean()
        another = np.abs(img - read_face(folder, other, SIZE).astype(np.float32)).mean()
        assert own < 8.0 and own < another / 3, (rel, own, another)


def test_identity_index_and_loaders_read_a_pack_like_the_folder(packed_raw, sample_dir):
    want = IdentityIndex.open(sample_dir)
    for got in (IdentityIndex.from_source(packed_raw), IdentityIndex.open(packed_raw)):
        assert got.kind == "shards" and got.names == want.names
        assert got.counts.tolist() == want.counts.tolist()
        assert got.paths(range(len(got))) == want.paths(range(len(want)))
        assert (got.labels == want.labels).all()
    shards = IdentityIndex.open(packed_raw).filter(min_images=2)
    tree = want.filter(min_images=2)
    kw = dict(chunk_size=24, images_per_identity=4, image_size=SIZE, seed=5, prefetch=0)
    with ChunkedLoader(shards, **kw) as a, ChunkedLoader(tree, **kw) as b:
        for ca, cb in zip(a.epoch(0), b.epoch(0)):
            np.testing.assert_array_equal(ca.images, cb.images)
            np.testing.assert_array_equal(ca.labels, cb.labels)
        assert a.stats["images"] == b.stats["images"] > 0 and a.stats["skipped"] == 0
    saved = IdentityIndex.open(packed_raw).save(packed_raw.parent / "saved_index")
    assert IdentityIndex.open(saved).reader()(want.path(0)) == (sample_dir / "lfw" / want.path(0)).read_bytes()


def test_the_sample_pairs_list_resolves_against_the_pack(packed_raw, sample_dir, folder):
    for name in ("pairsTrain.txt", "pairsVal.txt"):  # pack copies the lists next to its source
        assert (packed_raw / name).read_text() == (sample_dir / name).read_text()
    pairs = parse_pairs(packed_raw / "pairsVal.txt")
    kept, missing = resolve_pairs(pairs, packed_raw)
    assert missing == [] and kept == resolve_pairs(pairs, folder)[0] and len(kept) == len(pairs)
    a = PairData.from_pairs(pairs, packed_raw, size=SIZE, progress=False)
    b = PairData.from_pairs(pairs, folder, size=SIZE, progress=False)
    assert a.relpaths == b.relpaths and len(a) == len(pairs)
    np.testing.assert_array_equal(a.images, b.images)


def test_scan_shard_finds_every_record_without_tensorflow(packed_raw):
    meta = json.loads((packed_raw / INDEX_NAME).read_text())
    recs = [r for s in meta["shards"] for r in scan_shard(packed_raw / s["file"])]
    assert len(recs) == meta["num_images"] == sum(meta["counts"])
    assert [sum(r.label == k for r in recs) for k in range(len(meta["names"]))] == meta["counts"]


def test_unusable_pack_folders_say_why(packed_raw, tmp_path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(packed_raw, unfinished)
    (unfinished / INDEX_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        open_image_source(unfinished)

    gone = tmp_path / "gone"
    shutil.copytree(packed_raw, gone)
    (gone / shard_name(1, 3)).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        open_image_source(gone)

    # a shard whose records carry no relative path (not written by kerasface pack)
    import tensorflow as tf

    nameless = tmp_path / "nameless"
    shutil.copytree(packed_raw, nameless)
    f = nameless / shard_name(0, 3)
    with tf.io.TFRecordWriter(str(f)) as w:
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\xd8 not used"])),
                   "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0]))}
        w.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    meta = json.loads((nameless / INDEX_NAME).read_text())
    meta["shards"][0]["bytes"] = f.stat().st_size
    (nameless / INDEX_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no path feature; an image source needs each image's"):
        open_image_source(nameless)
    meta["shards"][0]["bytes"] += 1
    (nameless / INDEX_NAME).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="changed since packing"):
        open_image_source(nameless)
