"""pack hardening (issue 16, section 3): what it stores its own reader reads, a looping symbolic link is
skipped, two packs of the same folder are byte for byte the same, a full disk names the path."""

from __future__ import annotations

import logging
import os
import shutil

import cv2
import numpy as np
import pytest

from kerasface.data import IdentityIndex
from kerasface.data.images import decode_image
from kerasface.data.records import shard_name
from kerasface.data.tfrecord import pack, read_shards


@pytest.fixture
def odd_formats(sample_dir, tmp_path):
    """Two identities: real faces re-saved as PGM (the ORL faces' format), TIFF, BMP and WebP, plus JPEGs."""
    root = tmp_path / "src"
    people = sorted(p for p in (sample_dir / "lfw").iterdir() if p.is_dir())[:2]
    for person in people:
        (root / person.name).mkdir(parents=True)
        for f in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(f, root / person.name / f.name)
        face = cv2.imread(str(sorted(person.glob("*.jpg"))[0]))
        cv2.imwrite(str(root / person.name / "grey.pgm"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
        cv2.imwrite(str(root / person.name / "scan.tiff"), face)
        cv2.imwrite(str(root / person.name / "paint.bmp"), face)
        cv2.imwrite(str(root / person.name / "web.webp"), face, [cv2.IMWRITE_WEBP_QUALITY, 101])
    return root


def test_pgm_tiff_bmp_webp_are_packed_so_that_read_shards_decodes_them(odd_formats, tmp_path):
    out = tmp_path / "out"
    summary = pack(odd_formats, out, shards=2, progress=False)
    n = len(IdentityIndex.open(odd_formats))
    assert summary.written == n and summary.corrupt == 0
    records = [(x.numpy(), p.numpy().decode()) for x, _, p in read_shards(out, with_paths=True, seed=0)]
    assert len(records) == n  # tf.data decodes every record (it used to fail on PGM / TIFF)
    for img, rel in records:
        want = decode_image((odd_formats / rel).read_bytes(), rel)  # what every other reader sees
        np.testing.assert_array_equal(img, want, err_msg=rel)


def test_two_packs_of_the_same_folder_are_byte_for_byte_the_same(odd_formats, tmp_path):
    for name in ("a", "b"):
        pack(odd_formats, tmp_path / name, shards=2, progress=False)
    for s in range(2):
        f = shard_name(s, 2)
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_a_looping_symbolic_link_is_skipped_and_logged(odd_formats, tmp_path, caplog):
    person = sorted(p for p in odd_formats.iterdir())[0]
    n = len(IdentityIndex.open(odd_formats))
    os.symlink("loop.jpg", person / "loop.jpg")        # a file that links to itself
    os.symlink("Zz_loop", odd_formats / "Zz_loop")      # a folder that links to itself
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        summary = pack(odd_formats, tmp_path / "out", shards=1, progress=False)
    assert summary.written == n and summary.corrupt == summary.missing == 0
    assert "skipped 2 entries" in caplog.text and "loop.jpg" in caplog.text and "Zz_loop" in caplog.text


def test_a_full_disk_is_an_oserror_naming_the_shard(odd_formats, tmp_path, monkeypatch):
    import tensorflow as tf

    class FullDisk:
        def __init__(self, path):
            self.path = path

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, record):
            raise tf.errors.ResourceExhaustedError(None, None, f"{self.path}; No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
    out = tmp_path / "out"
    with pytest.raises(OSError, match=rf"cannot write {out / shard_name(0, 1)} \(folder {out}\): "
                                      r"ResourceExhaustedError: .*No space left on device"):
        pack(odd_formats, out, shards=1, progress=False)
    assert not list(out.glob(".shard-*"))  # no temporary left behind


@pytest.mark.parametrize("kw, message", [({"jpeg_quality": -1, "image_size": 32},
                                          r"--jpeg-quality must be in \[1, 100\]"),
                                         ({"limit": -1}, "--limit must be >= 1")])
def test_pack_refuses_values_out_of_range(odd_formats, tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        pack(odd_formats, tmp_path / "out", shards=1, progress=False, **kw)


def test_an_image_given_as_src_is_one_clear_error(sample_dir, tmp_path):
    jpeg = sorted((sample_dir / "lfw").glob("*/*.jpg"))[0]
    with pytest.raises(ValueError, match=rf"SRC {jpeg} is a jpeg image, not a folder tree, zip or file list"):
        pack(jpeg, tmp_path / "out", shards=1, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_zip_src_keeps_the_requested_crop_format(sample_dir, tmp_path):
    """The SRC-is-an-image check reads the first bytes of a file SRC; it must not change ``fmt`` (a zip or a
    file list packed with ``fmt="png"`` was recorded and encoded as JPEG)."""
    import json
    import zipfile

    from kerasface.data.tfrecord import CONFIG_NAME, pack

    people = sorted(p for p in (sample_dir / "lfw").iterdir() if p.is_dir())[:2]
    src = tmp_path / "faces.zip"
    with zipfile.ZipFile(src, "w") as z:
        for person in people:
            for f in sorted(person.glob("*.jpg"))[:2]:
                z.write(f, f"{person.name}/{f.name}")
    pack(src, tmp_path / "out", shards=1, image_size=32, fmt="png", progress=False)
    config = json.loads((tmp_path / "out" / CONFIG_NAME).read_text())
    assert config["encoding"] == "png" and config["jpeg_quality"] is None
