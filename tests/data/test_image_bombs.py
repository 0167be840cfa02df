"""The decompression-bomb limit holds for every format OpenCV decodes (issue 16, section 1).

Small files that declare huge sizes, one per format, are refused from their header by every
reader (``decode_image``: training, evaluation, packing; ``read_face``; the ``ImageDecoder``;
the aligner's decoder) before OpenCV sees a byte of them; formats whose header is not read
(JPEG 2000, AVIF, ...) are refused, not decoded unchecked.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from kerasface.data import CorruptImageError, decode_image
from kerasface.data import images as images_module
from kerasface.data.align import decode_for_alignment
from kerasface.data.images import MAX_PIXELS, ImageDecoder, check_image_size, image_dimensions, read_face
from kerasface.data.sources import open_image_source

W, H = 21_000, 20_000  # 420 Mpx: the TIFF


def _tiff(w, h, order="<"):
    """A classic TIFF: header, one IFD with ImageWidth/ImageLength (LONG) and a few more tags."""
    magic = b"II*\x00" if order == "<" else b"MM\x00*"
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 8), (262, 3, 1, 1), (273, 4, 1, 8)]
    ifd = struct.pack(order + "H", len(entries))
    for tag, typ, count, value in entries:
        ifd += struct.pack(order + "HHI", tag, typ, count) + (struct.pack(order + "HH", value, 0) if typ == 3
                                                             else struct.pack(order + "I", value))
    return magic + struct.pack(order + "I", 8) + ifd + struct.pack(order + "I", 0) + b"\x78\x9c" + b"\0" * 64


def _bigtiff(w, h):
    entries = [(256, 16, 1, w), (257, 16, 1, h)]
    ifd = struct.pack("<Q", len(entries)) + b"".join(struct.pack("<HHQQ", t, ty, c, v) for t, ty, c, v in entries)
    return b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + ifd + struct.pack("<Q", 0)


def _bmp(w, h):
    info = struct.pack("<IiiHHIIiiII", 40, w, -h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 54) + info + b"\0" * 64


def _webp_vp8x(w, h):
    body = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _webp_vp8l(w, h):
    bits = (w - 1) | ((h - 1) << 14)
    body = b"VP8L" + struct.pack("<I", 5) + b"\x2f" + struct.pack("<I", bits) + b"\0"
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


BOMBS = {
    "tiff-le.jpg": (_tiff(W, H), "tiff", W, H),            # the repro: a TIFF named .jpg
    "tiff-be.tif": (_tiff(W, H, ">"), "tiff", W, H),
    "bigtiff.tif": (_bigtiff(W, H), "tiff", W, H),
    "bitmap.bmp": (_bmp(30_000, 30_000), "bmp", 30_000, 30_000),
    "grey.pgm": (b"P5\n# a comment\n30000 30000\n255\n" + b"\0" * 64, "pnm", 30_000, 30_000),
    "ascii.ppm": (b"P3 30000\n30000 255 0 0 0", "pnm", 30_000, 30_000),
    "arbitrary.pam": (b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\nTUPLTYPE RGB\nENDHDR\n" + b"\0" * 64,
                      "pnm", 30_000, 30_000),
    "float.pfm": (b"PF\n30000 30000\n-1.0\n" + b"\0" * 64, "pfm", 30_000, 30_000),
    "canvas.webp": (_webp_vp8x(30_000, 30_000), "webp", 30_000, 30_000),
    "lossless.webp": (_webp_vp8l(16_384, 16_384), "webp", 16_384, 16_384),  # 268 Mpx: under the limit, read right
    "screen.gif": (b"GIF89a" + struct.pack("<HH", 65_535, 65_535) + b"\0" * 64, "gif", 65_535, 65_535),
    "sun.ras": (b"\x59\xa6\x6a\x95" + struct.pack(">IIII", 30_000, 30_000, 24, 0) + b"\0" * 64,
                "sunras", 30_000, 30_000),
    "radiance.hdr": (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + b"\0" * 64,
                     "hdr", 30_000, 30_000),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_every_format_header_gives_its_declared_size(name):
    data, fmt, w, h = BOMBS[name]
    assert image_dimensions(data) == (fmt, w, h)


@pytest.fixture
def no_decoding(monkeypatch):
    """cv2.imdecode fails the test if called: refusal must come from the header alone."""
    def refuse(*args, **kwargs):
        raise AssertionError("cv2.imdecode was called on a refused image")

    monkeypatch.setattr(cv2, "imdecode", refuse)


@pytest.mark.parametrize("name", sorted(n for n, (_, _, w, h) in BOMBS.items() if w * h > MAX_PIXELS))
def test_every_reader_refuses_a_bomb_of_every_format_before_decoding(name, tmp_path, no_decoding):
    data, fmt, w, h = BOMBS[name]
    too_large = rf"too large: {fmt} header declares {w} x {h} pixels"
    with pytest.raises(CorruptImageError, match=too_large):
        decode_image(data, name)                        # train (chunks, P x K, pairs), pack, insightface .bin
    with pytest.raises(CorruptImageError, match=too_large):
        decode_for_alignment(data, name)                # align
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / name).write_bytes(data)
    source = open_image_source(tmp_path)
    with pytest.raises(CorruptImageError, match=too_large):
        read_face(source, f"a/{name}", 32)              # evaluate, embed, case pictures
    with ImageDecoder(tmp_path, 32) as decoder:         # the training decoder skips and counts it
        images, ok = decoder.decode_paths([f"a/{name}"])
    assert not ok[0] and decoder.stats.corrupt == 1 and images.max() == 0


def test_formats_whose_size_is_not_checked_are_refused_not_decoded(no_decoding):
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 64
    avif = b"\x00\x00\x00\x20ftypavif" + b"\0" * 64
    for data in (jp2, avif, b"not an image at all"):
        assert image_dimensions(data) is None
        with pytest.raises(CorruptImageError, match="not an image in a supported format"):
            check_image_size(data, "x.jpg")


@pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00\x08\x00\x00\x00",
                                  b"RIFF\0\0\0\0WEBPVP8 ", b"P5\n", b"BM\0"])
def test_a_truncated_header_is_a_clear_error(data, no_decoding):
    with pytest.raises(CorruptImageError, match="cannot decode, .* header is truncated or gives no size"):
        decode_image(data, "cut")


def test_real_small_images_of_every_checked_format_decode(tmp_path):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".tiff", ".webp", ".ppm", ".pam", ".ras", ".gif"):
        data = cv2.imencode(ext, bgr)[1].tobytes()
        assert image_dimensions(data)[1:] == (53, 37), ext
        assert decode_image(data, ext).shape == (37, 53, 3), ext
    for ext, arr in ((".pgm", bgr[..., 0]), (".pbm", bgr[..., 0]), (".pfm", bgr.astype(np.float32) / 255),
                     (".hdr", bgr.astype(np.float32) / 255)):
        data = cv2.imencode(ext, arr)[1].tobytes()
        assert image_dimensions(data)[1:] == (53, 37), ext
        assert decode_image(data, ext).shape == (37, 53, 3), ext
    lossless = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert lossless[12:16] == b"VP8L" and image_dimensions(lossless) == ("webp", 53, 37)


def test_the_limit_is_one_setting_read_at_call_time(monkeypatch):
    data = cv2.imencode(".bmp", np.zeros((20, 30, 3), np.uint8))[1].tobytes()
    monkeypatch.setattr(images_module, "MAX_PIXELS", 599)
    with pytest.raises(CorruptImageError, match=r"30 x 20 pixels \(limit 599 pixels\)"):
        decode_for_alignment(data, "small.bmp")
    with pytest.raises(CorruptImageError, match="limit 599"):
        decode_image(data, "small.bmp")
