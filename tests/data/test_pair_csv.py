"""Pairs CSV parsing (labels, header, folds, paths) and its one-line errors; the pairs-list lookup rule."""

from __future__ import annotations

import re

import pytest

from kerasface.data import Pair, PathPair, is_pairs_csv, parse_pairs_csv, read_pairs_list
from kerasface.data.splits import find_pairs_list


def write(tmp_path, text, name="pairs.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_headerless_rows_every_label_spelling(tmp_path):
    path = write(tmp_path, "a/1.jpg,a/2.jpg,1\n"
                           "a/1.jpg,b/1.png,0\n"
                           "\n"
                           "# a comment\n"
                           "c\\x.jpg , c/y.jpg, Same\n"
                           "c/x.jpg,d/y.jpg,DIFFERENT\n"
                           "e.jpg,f.jpg,true\n"
                           "e.jpg,g.jpg,False\n")
    pairs = parse_pairs_csv(path)
    assert [p.same for p in pairs] == [True, False, True, False, True, False]
    assert pairs[0] == PathPair("a/1.jpg", "a/2.jpg", True, 0)
    assert pairs[2].path1 == "c/x.jpg" and pairs[2].path2 == "c/y.jpg"  # backslash and spaces normalised
    assert {p.fold for p in pairs} == {0}


def test_header_names_columns_in_any_order_with_folds_and_extra_columns(tmp_path):
    path = write(tmp_path, "\ufefflabel,note,img2,img1,fold\n"  # UTF-8 BOM (Notepad) accepted
                           "same,\"x, y\",\"b,1.jpg\",a.jpg,3\n"   # a comma inside a quoted path
                           "0,,c.jpg,a.jpg,4\n")
    pairs = parse_pairs_csv(path)
    assert pairs == [PathPair("a.jpg", "b,1.jpg", True, 3), PathPair("a.jpg", "c.jpg", False, 4)]
    assert pairs[0].fold_number == 3 and pairs[0].name1 == "a.jpg"


def test_headerless_fourth_column_is_the_fold(tmp_path):
    pairs = parse_pairs_csv(write(tmp_path, "a.jpg,b.jpg,1,1\na.jpg,c.jpg,0,2\n"))
    assert [p.fold for p in pairs] == [1, 2]


@pytest.mark.parametrize("text, line, reason", [
    ("a.jpg,b.jpg,1\na.jpg,c.jpg\n", 2, "expected 3 fields"),
    ("a.jpg,b.jpg,1\na.jpg,c.jpg,0,1,9\n", 2, "expected 3 fields"),
    ("a.jpg,b.jpg,1\n\na.jpg,c.jpg,maybe\n", 3, "label must be"),
    ("img1,img2,label\na.jpg,b.jpg,2\n", 2, "label must be"),
    ("a.jpg,,1\n", 1, "empty img2"),
    ("/etc/a.jpg,b.jpg,1\n", 1, "is absolute"),
    ("a.jpg,C:\\b.jpg,1\n", 1, "is absolute"),
    ("a.jpg,../b.jpg,1\n", 1, "climbs out"),
    ("a.jpg,b.jpg,1,first\n", 1, "fold must be an integer"),
    ("image_a,image_b,verdict\na.jpg,b.jpg,1\n", 1, "img1, img2, label missing"),
    ("img1,img2,label,label\na.jpg,b.jpg,1,1\n", 1, "more than once"),
    ("img1,img2,label\na.jpg,b.jpg,1,extra\n", 2, "expected 3 fields as the header names"),
    ("img1,img2,label\n# nothing\n", None, "no pairs"),
    ("", None, "no pairs"),
])
def test_malformed_csv_one_line_error_with_file_and_line(tmp_path, text, line, reason):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as e:
        parse_pairs_csv(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)) and reason in msg
    if line is not None:
        assert re.match(re.escape(f"{path}, line {line}:"), msg), msg


def test_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "a.jpg,b.jpg,1\nJos\xe9.jpg,b.jpg,0\n", encoding="latin-1")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: not UTF-8")):
        parse_pairs_csv(path)


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        parse_pairs_csv(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        parse_pairs_csv(tmp_path / "nope.csv")


def test_read_pairs_list_tells_csv_from_lfw_lists(tmp_path, sample_dir):
    lfw = read_pairs_list(sample_dir / "pairsVal.txt")
    assert len(lfw) == 60 and all(isinstance(p, Pair) for p in lfw)
    assert not is_pairs_csv(sample_dir / "pairsVal.txt")
    no_suffix = write(tmp_path, "a.jpg,b.jpg,1\n", name="pairs_list")  # a comma on its first line: CSV
    assert is_pairs_csv(no_suffix) and read_pairs_list(no_suffix) == [PathPair("a.jpg", "b.jpg", True)]
    assert lfw[0].fold_number == 1  # LFW folds are numbered from 1 in reports (fold counts from 0)


def test_find_pairs_list_next_to_data_and_folders(tmp_path, sample_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_pairs_list(sample_dir, "pairsVal.txt") == sample_dir / "pairsVal.txt"
    (tmp_path / "pairsVal.txt").write_text("1\nA 1 2\nA 1 B 1\n")  # one in the working folder wins
    assert find_pairs_list(sample_dir, "pairsVal.txt") == tmp_path.joinpath("pairsVal.txt").relative_to(tmp_path)
    (tmp_path / "lists").mkdir()
    with pytest.raises(IsADirectoryError, match="'lists' is a folder"):
        find_pairs_list(sample_dir, "lists", what="--eval-pairs")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        find_pairs_list(sample_dir.parent, "lfw_sample")  # a folder next to the data
    with pytest.raises(FileNotFoundError, match="not found"):
        find_pairs_list(sample_dir, "nope.txt")


def test_broken_csv_quoting_and_multiline_rows_name_their_line(tmp_path):
    path = write(tmp_path, 'img1,img2,label,note\na.jpg,b.jpg,1,"two\nlines"\nd.jpg,"e.jpg" x,1,n\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 4: not a valid CSV row")):
        parse_pairs_csv(path)
    path = write(tmp_path, 'img1,img2,label,note\na.jpg,b.jpg,1,"two\nlines"\nc.jpg,d.jpg,maybe,z\n', name="m.csv")
    with pytest.raises(ValueError, match=re.escape(f"{path}, line 4: label must be")):  # the row after 2 lines
        parse_pairs_csv(path)
    for name, text in (("nul.csv", "a.jpg,b.jpg,1\na\x00.jpg,c.jpg,0\n"),
                       ("nl.csv", 'a.jpg,b.jpg,1\n"a\nb.jpg",c.jpg,0\n')):
        path = write(tmp_path, text, name=name)
        with pytest.raises(ValueError, match=re.escape(f"{path}, line 2: img1 ") + ".* contains a control character"):
            parse_pairs_csv(path)
