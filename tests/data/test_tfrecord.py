"""kerasface pack / read_shards on real LFW faces: round trip, labels, resume, partial shards, corrupt inputs, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kerasface.data import IdentityIndex, open_image_source
from kerasface.data.images import decode_image, read_face
from kerasface.data.records import CONFIG_NAME, INDEX_NAME, read_index, shard_name
from kerasface.data.tfrecord import pack, read_shards

SIZE = 48


@pytest.fixture(scope="module")
def small_tree(sample_dir, tmp_path_factory) -> Path:
    """40 identities of the sample (every image of each), as a folder tree ``<Name>/<file>``."""
    root = tmp_path_factory.mktemp("tree")
    names = sorted(p.name for p in (sample_dir / "lfw").iterdir() if p.is_dir())[:40]
    for n in names:
        shutil.copytree(sample_dir / "lfw" / n, root / n)
    return root


@pytest.fixture(scope="module")
def packed_png(small_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("pack") / "png"
    summary = pack(small_tree, out, shards=3, image_size=SIZE, fmt="png", progress=False)
    return out, summary


def _records(out, **kw):
    ds = read_shards(out, with_paths=True, seed=0, **kw)
    return [(x.numpy(), int(y), p.numpy().decode()) for x, y, p in ds]


def test_png_round_trip_equals_the_source_crops_and_labels(small_tree, packed_png):
    out, summary = packed_png
    index = IdentityIndex.open(small_tree)
    assert summary.written == len(index) and summary.corrupt == summary.missing == 0
    recs = _records(out)
    assert sorted(p for _, _, p in recs) == sorted(index.paths(range(len(index))))  # every image exactly once
    source = open_image_source(small_tree)
    for img, label, rel in recs:
        assert img.dtype == np.uint8 and img.shape == (SIZE, SIZE, 3)
        np.testing.assert_array_equal(img, read_face(source, rel, SIZE))  # lossless: the same crop
        assert label == index.label_of(rel.split("/", 1)[0])  # IdentityIndex's labels
    idx = read_index(out)
    assert idx["names"] == index.names and idx["counts"] == index.counts.tolist()
    assert idx["num_images"] == len(index) and idx["format_version"] == 1
    files = [s["file"] for s in idx["shards"]]
    assert files == [shard_name(i, 3) for i in range(3)]
    assert [s["bytes"] for s in idx["shards"]] == [(out / f).stat().st_size for f in files]
    assert sum(s["records"] for s in idx["shards"]) == len(index)
    # every shard mixes identities (the images are spread in a seeded random order)
    per_shard = [len({y for _, y in _records_of_shard(out, f)}) for f in files]
    assert min(per_shard) > 10, per_shard


def _records_of_shard(out, f):
    return [(x.numpy(), int(y)) for x, y in read_shards(out, files=[f], seed=0)]


def test_batches_shuffle_cache_normalize(packed_png):
    out, _ = packed_png
    a = [(x.numpy(), y.numpy()) for x, y in read_shards(out, batch_size=16, shuffle_buffer=64, seed=3, cache=True)]
    b = [(x.numpy(), y.numpy()) for x, y in read_shards(out, batch_size=16, shuffle_buffer=64, seed=3)]
    plain = _records(out)
    assert a[0][0].shape == (16, SIZE, SIZE, 3) and a[0][1].dtype == np.int32
    la, lb = np.concatenate([y for _, y in a]), np.concatenate([y for _, y in b])
    np.testing.assert_array_equal(la, lb)  # the same seed, the same order (cached or not)
    assert sorted(la.tolist()) == sorted(y for _, y, _ in plain)
    assert la.tolist() != [y for _, y, _ in plain]  # shuffled
    xn, _ = next(iter(read_shards(out, batch_size=4, normalize=True, seed=0)))
    x8 = np.stack([r[0] for r in plain[:4]])
    np.testing.assert_allclose(xn.numpy(), (x8.astype(np.float32) - 127.5) / 128.0)
    # resize on read when another size is asked for
    x32, _ = next(iter(read_shards(out, image_size=32, batch_size=2, seed=0)))
    assert x32.shape == (2, 32, 32, 3) and x32.dtype.name == "uint8"


def test_raw_bytes_are_kept_and_decode_exactly_like_opencv(small_tree, tmp_path):
    out = tmp_path / "raw"
    pack(small_tree, out, shards=2, image_size=None, limit=30, progress=False)
    import tensorflow as tf

    ds = tf.data.TFRecordDataset([str(out / shard_name(i, 2)) for i in range(2)])
    feats = {"image": tf.io.FixedLenFeature([], tf.string), "path": tf.io.FixedLenFeature([], tf.string)}
    n = 0
    for r in ds:
        ex = tf.io.parse_single_example(r, feats)
        rel = ex["path"].numpy().decode()
        assert ex["image"].numpy() == (small_tree / rel).read_bytes()
        n += 1
    assert n == 30 and read_index(out)["encoding"] == "original"
    for img, _, rel in _records(out)[:8]:
        np.testing.assert_array_equal(img, decode_image((small_tree / rel).read_bytes(), rel))


def test_rerun_skips_finished_shards_and_redoes_a_partial_one(small_tree, tmp_path):
    out = tmp_path / "resume"
    first = pack(small_tree, out, shards=4, image_size=SIZE, fmt="jpg", progress=False)
    files = [out / shard_name(i, 4) for i in range(4)]
    content = [f.read_bytes() for f in files]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = pack(small_tree, out, shards=4, image_size=SIZE, fmt="jpg", progress=False)
    assert again.skipped_shards == 4 and again.packed == 0 and again.written == first.written
    assert [f.stat().st_mtime_ns for f in files] == stamps
    # a killed run: shard 2 cut short (its sidecar names the full size), a temporary left behind
    files[2].write_bytes(content[2][: len(content[2]) // 3])
    (out / ".shard-00002-of-00004-abc.tfrecord").write_bytes(b"partial")
    third = pack(small_tree, out, shards=4, image_size=SIZE, fmt="jpg", progress=False)
    assert third.skipped_shards == 3
    assert third.packed == json.loads((out / "shard-00002-of-00004.json").read_text())["records"]
    assert files[2].read_bytes() == content[2]  # redone, the same records
    assert [f.stat().st_mtime_ns for i, f in enumerate(files) if i != 2] == [s for i, s in enumerate(stamps) if i != 2]
    assert not list(out.glob(".shard-*"))
    assert len(_records(out)) == first.written


def test_other_settings_are_refused(small_tree, tmp_path):
    out = tmp_path / "settings"
    pack(small_tree, out, shards=2, image_size=SIZE, limit=20, progress=False)
    with pytest.raises(ValueError, match=r"image_size: 48 -> 64"):
        pack(small_tree, out, shards=2, image_size=64, limit=20, progress=False)
    with pytest.raises(ValueError, match=r"shards: 2 -> 3"):
        pack(small_tree, out, shards=3, image_size=SIZE, limit=20, progress=False)
    assert json.loads((out / CONFIG_NAME).read_text())["image_size"] == SIZE


def test_corrupt_and_empty_images_are_skipped_and_counted(small_tree, tmp_path):
    src = tmp_path / "src"
    names = sorted(p.name for p in small_tree.iterdir())[:6]
    for n in names:
        shutil.copytree(small_tree / n, src / n)
    good = sorted((src / names[0]).iterdir())[0]
    (src / names[1] / "broken.jpg").write_bytes(good.read_bytes()[:600])  # truncated JPEG
    (src / names[2] / "empty.jpg").write_bytes(b"")
    (src / names[3] / "text.jpg").write_bytes(b"not an image at all")
    summary = pack(src, tmp_path / "out", shards=2, image_size=SIZE, progress=False)
    index = IdentityIndex.open(src)
    assert summary.corrupt == 3 and summary.written == len(index) - 3
    recs = _records(tmp_path / "out")
    paths = {p for _, _, p in recs}
    assert not paths & {f"{names[1]}/broken.jpg", f"{names[2]}/empty.jpg", f"{names[3]}/text.jpg"}
    assert len(recs) == len(index) - 3
    skipped = read_index(tmp_path / "out")["skipped"]
    assert skipped["corrupt"] == 3 and {e["path"] for e in skipped["examples"]} == {
        f"{names[1]}/broken.jpg", f"{names[2]}/empty.jpg", f"{names[3]}/text.jpg"}
    # counts are the records actually written, per label
    counts = read_index(tmp_path / "out")["counts"]
    assert counts == [c - (1 if n in names[1:4] else 0) for n, c in zip(index.names, index.counts.tolist())]


def test_pack_cli_end_to_end(small_tree, tmp_path, capsys):
    from kerasface.cli import main

    out = tmp_path / "cli"
    assert main(["pack", str(small_tree), str(out), "--shards", "2", "--image-size", "32", "--limit", "25",
                 "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "25 images in 2 shard(s)" in said, said
    assert (out / INDEX_NAME).is_file() and len(list(out.glob("shard-*.tfrecord"))) == 2
    imgs = _records(out)
    assert len(imgs) == 25 and all(x.shape == (32, 32, 3) for x, _, _ in imgs)
    assert main(["pack", str(small_tree), str(out), "--shards", "2", "--image-size", "32", "--limit", "25",
                 "--quiet"]) == 0
    assert "2 shard(s) already finished" in capsys.readouterr().out
    assert main(["pack", str(small_tree), str(out), "--shards", "2", "--image-size", "40", "--limit", "25",
                 "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "nowhere"), str(tmp_path / "o2"), "--quiet"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
