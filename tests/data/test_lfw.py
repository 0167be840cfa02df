"""Image sources and pairs lists on real LFW data."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pytest

from kerasface.data import FolderSource, Pair, ZipSource, lfw_relpath, open_image_source, parse_pairs, resolve_pairs


def _zip_folder(folder: Path, dest: Path, prefix: str) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as z:
        for f in sorted(folder.glob("*/*.jpg")):
            z.write(f, f"{prefix}{f.parent.name}/{f.name}")
    return dest


def test_lfw_relpath_and_pair_paths():
    assert lfw_relpath("Aaron_Peirsol", 1) == "Aaron_Peirsol/Aaron_Peirsol_0001.jpg"
    p = Pair("A_B", 2, "C_D", 13, False, 0)
    assert (p.path1, p.path2) == ("A_B/A_B_0002.jpg", "C_D/C_D_0013.jpg")


def test_official_lists_parse(shared_lfw):
    view2 = parse_pairs(shared_lfw / "pairs.txt")
    assert len(view2) == 6000
    assert sorted({p.fold for p in view2}) == list(range(10))
    for fold in range(10):
        chunk = [p for p in view2 if p.fold == fold]
        assert len(chunk) == 600
        assert sum(p.same for p in chunk) == 300
        assert all(p.same for p in chunk[:300]) and not any(p.same for p in chunk[300:])
    assert view2[0] == Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4, True, 0)
    assert all(p.name1 == p.name2 for p in view2 if p.same)
    dev_test = parse_pairs(shared_lfw / "pairsDevTest.txt")
    dev_train = parse_pairs(shared_lfw / "pairsDevTrain.txt")
    assert (len(dev_test), sum(p.same for p in dev_test)) == (1000, 500)
    assert (len(dev_train), sum(p.same for p in dev_train)) == (2200, 1100)
    assert {p.fold for p in dev_test} == {p.fold for p in dev_train} == {0}
    # every official pair resolves against the complete zip
    kept, missing = resolve_pairs(view2, shared_lfw / "lfw.zip", on_missing="error")
    assert len(kept) == 6000 and missing == []


def test_sample_lists_are_prefixes_of_official_dev_lists(sample_dir):
    for fname in ("pairsTrain.txt", "pairsVal.txt"):
        n = int((sample_dir / fname).read_text().splitlines()[0])
        pairs = parse_pairs(sample_dir / fname)
        assert len(pairs) == 2 * n and sum(p.same for p in pairs) == n
    train = parse_pairs(sample_dir / "pairsTrain.txt")
    assert train[0] == Pair("Aaron_Peirsol", 1, "Aaron_Peirsol", 2, True, 0)  # first line of pairsDevTrain.txt


def test_parse_space_separated_lines():
    pairs = parse_pairs(["2", "Ann_A 1 2", "Bob_B  3\t4", "", "Ann_A 1 Bob_B 2", "Cy_C 1 Ann_A 3"])
    assert [p.same for p in pairs] == [True, True, False, False]
    assert pairs[1] == Pair("Bob_B", 3, "Bob_B", 4, True, 0)
    assert pairs[3].path2 == "Ann_A/Ann_A_0003.jpg"


def test_parse_folds_header():
    lines = ["2 1", "A 1 2", "A 1 B 1", "C 1 2", "C 2 D 1"]
    assert [p.fold for p in parse_pairs(lines)] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    "bad_line, lineno, match",
    [("Ann_A 1 2 3 4", 3, "expected 3 fields"), ("Ann_A one 2", 3, "expected an integer"), ("Ann_A", 3, "got 1")],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, lineno, match):
    f = tmp_path / "pairs_bad.txt"
    f.write_text("\n".join(["1", "Ann_A 1 2", bad_line]) + "\n")
    with pytest.raises(ValueError, match=match) as e:
        parse_pairs(f)
    assert "pairs_bad.txt" in str(e.value) and f"line {lineno}" in str(e.value)


def test_header_count_mismatch_raises(tmp_path):
    with pytest.raises(ValueError, match="header promises"):
        parse_pairs(["2", "A 1 2", "B 1 2", "A 1 B 1"])  # 3 pairs, 4 promised
    with pytest.raises(ValueError, match="fold 0 has 2 matched"):
        parse_pairs(["1", "A 1 2", "B 1 2"])  # right total, wrong balance
    with pytest.raises(ValueError, match="bad header"):
        parse_pairs(["A 1 2", "A 1 3"])


def test_open_image_source_layouts(sample_dir, tmp_path):
    root = open_image_source(sample_dir)  # folder containing lfw/
    direct = open_image_source(sample_dir / "lfw")  # <root>/<Name>/...
    assert isinstance(root, FolderSource) and root.path == direct.path == sample_dir / "lfw"
    images = root.list_images()
    assert images == direct.list_images() and len(images) > 100
    assert all(r.count("/") == 1 and r.split("/")[1].startswith(r.split("/")[0] + "_") for r in images)
    assert root.exists(images[0]) and not root.exists("Nobody/Nobody_0001.jpg")
    assert "FolderSource" in repr(root) and str(sample_dir) in repr(root)
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        open_image_source(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError, match="Nobody_0001"):
        root.read_bytes("Nobody/Nobody_0001.jpg")


@pytest.mark.parametrize("prefix", ["lfw/", ""])
def test_zip_and_folder_give_identical_bytes(sample_dir, tmp_path, prefix):
    folder = open_image_source(sample_dir)
    zpath = _zip_folder(sample_dir / "lfw", tmp_path / "sample.zip", prefix)
    with open_image_source(zpath) as z:
        assert isinstance(z, ZipSource) and z.prefix == prefix
        assert z.list_images() == folder.list_images()
        for rel in folder.list_images()[::7]:
            data = z.read_bytes(rel)
            assert data[:2] == b"\xff\xd8" and data == folder.read_bytes(rel)
        with pytest.raises(FileNotFoundError, match="Nobody"):
            z.read_bytes("Nobody/Nobody_0001.jpg")


def test_shared_zip_matches_bundled_sample(shared_lfw, sample_dir):
    folder = open_image_source(sample_dir)
    with open_image_source(shared_lfw) as z:  # a folder holding lfw.zip
        assert isinstance(z, ZipSource) and z.prefix == "lfw/" and len(z.list_images()) == 13233
        for rel in folder.list_images():
            assert z.read_bytes(rel) == folder.read_bytes(rel), rel


def test_resolve_pairs_reports_missing(sample_dir, tmp_path, caplog):
    pairs = parse_pairs(sample_dir / "pairsVal.txt")
    shutil.copytree(sample_dir / "lfw", tmp_path / "lfw")
    removed = sorted({p.path1 for p in pairs[:3]} | {pairs[-1].path2})
    for rel in removed:
        (tmp_path / "lfw" / rel).unlink()
    src = open_image_source(tmp_path)
    expected_dropped = [p for p in pairs if p.path1 in removed or p.path2 in removed]

    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        kept, missing = resolve_pairs(pairs, src, on_missing="skip")
    assert len(kept) == len(pairs) - len(expected_dropped)
    assert {rel for _, rel in missing} == set(removed)
    assert all(p in expected_dropped for p, _ in missing)
    msg = " ".join(r.getMessage() for r in caplog.records if r.name == "kerasface.data")
    assert f"{len(expected_dropped)} of {len(pairs)} pairs" in msg
    assert removed[0] in msg

    with pytest.raises(FileNotFoundError, match=f"{len(expected_dropped)} of {len(pairs)} pairs"):
        resolve_pairs(pairs, src, on_missing="error")
    # nothing missing: no warning, everything kept
    kept_all, none = resolve_pairs(pairs, sample_dir, on_missing="error")
    assert kept_all == pairs and none == []
