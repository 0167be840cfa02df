"""Untrusted zip inputs: zip-slip names and zip bombs are refused when the archive is opened."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from kerasface.data import ZipSource, open_image_source
from kerasface.data.align_run import align_tree
from kerasface.data.sources import ImageSource

SAMPLE_LFW = Path(__file__).resolve().parents[2] / "data" / "lfw_sample" / "lfw"


def _face() -> bytes:
    return next(SAMPLE_LFW.glob("*/*.jpg")).read_bytes()


@pytest.mark.parametrize("evil", ["../evil.jpg", "lfw/../../evil.jpg", "/tmp/evil.jpg", "Name\\..\\..\\evil.jpg",
                                  "C:/evil.jpg"])
def test_zip_slip_member_names_are_refused_at_open(tmp_path, evil):
    zpath = tmp_path / "lfw.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("lfw/Good_Person/Good_Person_0001.jpg", _face())
        z.writestr(evil, _face())
    with pytest.raises(ValueError, match=r"zip-slip"):
        ZipSource(zpath)
    with pytest.raises(ValueError, match=r"zip-slip"):
        open_image_source(zpath)


def test_aligner_on_a_zip_slip_archive_writes_nothing_outside_dst(tmp_path):
    zpath = tmp_path / "in" / "lfw.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("Good_Person/Good_Person_0001.jpg", _face())
        z.writestr("../escaped.jpg", _face())
    with pytest.raises(ValueError, match="zip-slip"):
        align_tree(zpath, tmp_path / "out" / "dst", progress=False)
    assert not list(tmp_path.rglob("escaped*"))


class _EvilSource(ImageSource):
    """A source that hands out a climbing relpath (what a naive zip reader would do)."""

    path = Path("evil")

    def list_images(self):
        return ["Good_Person/Good_Person_0001.jpg", "../../escaped.jpg"]

    def exists(self, rel):
        return True

    def read_bytes(self, rel):
        return _face()


def test_aligner_refuses_outputs_outside_dst_even_from_a_bad_source(tmp_path):
    dst = tmp_path / "a" / "b" / "dst"
    with pytest.raises(ValueError, match="outside DST"):
        align_tree(_EvilSource(), dst, progress=False)
    assert not list(tmp_path.rglob("escaped*"))


def test_zip_bomb_ratio_is_refused_before_reading(tmp_path):
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Bomb/Bomb_0001.png", b"\0" * (4 * 2**20))   # 4 MiB -> ~4 KB
    with pytest.raises(ValueError, match=r"Bomb_0001.png.*expands \d+x.*zip bomb"):
        ZipSource(zpath)


def test_declared_sizes_checked_against_configurable_limits(tmp_path):
    zpath = tmp_path / "lfw.zip"
    face = _face()
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("A/A_0001.jpg", face)
        z.writestr("B/B_0001.jpg", face)
    assert len(ZipSource(zpath).list_images()) == 2
    with pytest.raises(ValueError,
                       match=r"A_0001.jpg' declares [\d,]+ bytes uncompressed, over the per-image limit of 100"):
        ZipSource(zpath, max_member_bytes=100)
    with pytest.raises(ValueError, match=r"declare [\d,]+ bytes uncompressed, over the limit of 1,000"):
        ZipSource(zpath, max_total_bytes=1000)
