"""Bad inputs that the other data tests do not cover: odd formats, huge images, empty folders, one identity.

Each case ends in a clear error or a logged, counted skip, and the other images of the run are unaffected.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from kerasface.data import CorruptImageError, IdentityIndex, decode_image, load_images, pk_plan
from kerasface.data.images import image_dimensions

SAMPLE_LFW = Path(__file__).resolve().parents[2] / "data" / "lfw_sample" / "lfw"


def _png(arr) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG signature and IHDR declaring ``w x h`` RGB pixels, then a tiny (bogus) IDAT: a decompression
    bomb's shape."""
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = lambda t, d: len(d).to_bytes(4, "big") + t + d + zlib.crc32(t + d).to_bytes(4, "big")  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_png_rgba_grey_and_16_bit_become_8_bit_rgb():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cases = {
        "rgb.png": (_png(bgr), bgr[..., ::-1]),
        "rgba.png": (_png(np.dstack([bgr, np.full((20, 30), 7, np.uint8)])), bgr[..., ::-1]),
        "grey.png": (_png(bgr[..., 0]), np.repeat(bgr[..., :1], 3, axis=2)),
        "grey16.png": (_png(bgr[..., 0].astype(np.uint16) * 257), np.repeat(bgr[..., :1], 3, axis=2)),
        "rgb16.png": (_png(bgr.astype(np.uint16) * 257), bgr[..., ::-1]),
    }
    for name, (data, want) in cases.items():
        img = decode_image(data, name)
        assert img.dtype == np.uint8 and img.shape == (20, 30, 3), name
        np.testing.assert_array_equal(img, want, err_msg=name)


def test_10000_x_10000_jpeg_decodes_at_reduced_scale():
    big = np.zeros((10_000, 10_000, 3), np.uint8)
    big[:, 5_000:] = 255                       # left half black, right half white
    ok, buf = cv2.imencode(".jpg", big)
    del big
    data = buf.tobytes()
    assert image_dimensions(data) == ("jpeg", 10_000, 10_000)
    img = decode_image(data, "huge.jpg")
    assert img.shape == (2_500, 2_500, 3)       # 1/4 scale: 19 MB instead of 300 MB
    assert img[:, :1_200].max() < 10 and img[:, 1_300:].min() > 245


def test_header_declaring_too_many_pixels_is_refused_before_decoding():
    data = _png_header_only(30_000, 30_000)
    assert image_dimensions(data) == ("png", 30_000, 30_000)
    with pytest.raises(CorruptImageError, match=r"'bomb.png' is too large: png header declares 30000 x 30000"):
        decode_image(data, "bomb.png")


def test_bad_files_in_a_folder_are_skipped_counted_and_the_rest_is_unaffected(tmp_path, caplog):
    root = tmp_path / "lfw"
    good = sorted(SAMPLE_LFW.glob("*/*.jpg"))[:3]
    rels = []
    for f in good:
        (root / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
        rels.append(f"{f.parent.name}/{f.name}")
    bad = {
        "Bad/Bad_0001.jpg": b"",                                      # zero-byte file
        "Bad/Bad_0002.jpg": b"%PDF-1.4 this is not an image\n" * 20,  # not an image
        "Bad/Bad_0003.jpg": good[0].read_bytes()[:1500],              # truncated JPEG
        "Bad/Bad_0004.png": _png_header_only(30_000, 30_000),         # declared 900 Mpx
    }
    (root / "Bad").mkdir()
    for rel, data in bad.items():
        (root / rel).write_bytes(data)
    order = [rels[0], *bad, rels[1], rels[2]]
    with pytest.raises(CorruptImageError, match="Bad_0001.jpg"):
        load_images(root, order, size=32, on_error="raise", progress=False)
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        images, ok = load_images(root, order, size=32, on_error="skip", progress=False)
    assert ok.tolist() == [True, False, False, False, False, True, True]
    assert "4 of 7 images are corrupt and were skipped" in caplog.text
    alone, _ = load_images(root, rels, size=32, progress=False)
    np.testing.assert_array_equal(images[[0, 5, 6]], alone)
    assert not images[1:5].any()


def test_empty_identity_folder_is_ignored(tmp_path):
    for name in ("Ann_A", "Bob_B"):
        (tmp_path / name).mkdir()
    src = next(SAMPLE_LFW.glob("*/*.jpg"))
    shutil.copy(src, tmp_path / "Ann_A" / "Ann_A_0001.jpg")
    shutil.copy(src, tmp_path / "Ann_A" / "Ann_A_0002.jpg")
    (tmp_path / "Empty_Person").mkdir()
    (tmp_path / "Only_Text").mkdir()
    (tmp_path / "Only_Text" / "notes.txt").write_text("no images here")
    index = IdentityIndex.from_source(tmp_path)
    assert index.names == ["Ann_A"] and len(index) == 2


def test_one_identity_gives_no_p_x_k_batch_instead_of_a_degenerate_one():
    labels = np.zeros(10, dtype=np.int64)
    plan = pk_plan(labels, P=2, K=2)
    assert plan.shape == (0, 4)
    assert pk_plan(np.array([0, 0, 1, 1]), P=2, K=2).shape == (1, 4)


def test_aligner_decoder_refuses_a_declared_bomb_too():
    from kerasface.data.align import decode_for_alignment

    with pytest.raises(CorruptImageError, match=r"too large: png header declares 30000 x 30000"):
        decode_for_alignment(_png_header_only(30_000, 30_000), "bomb.png")
