"""Evaluating a CSV of labelled path pairs on real faces, ``--scores``, and where ``--pairs`` is found.

The reference is independent of kerasface's readers: images decoded with OpenCV here, the model
applied with ``model.predict`` on hand-built NumPy batches, cosine / L2 in NumPy.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys

import cv2
import numpy as np
import pytest

import kerasface  # noqa: F401
from kerasface.cli import main
from kerasface.data import pair_csv
from kerasface.evaluation.baselines import raw_pixels
from kerasface.evaluation.verification import evaluate_pairs, evaluate_to_dir, score_pairs, write_scores

SIZE = 32
LABEL_SPELLINGS = (("1", "0"), ("same", "different"), ("true", "false"))


def face(path, size=SIZE):
    """Independent decode: OpenCV, BGR->RGB, INTER_AREA resize of the whole image."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def numpy_scores(model, files1, files2, metric):
    """The pair scores computed directly: embeddings of OpenCV-decoded faces, L2-normalised, compared in NumPy."""
    batch = lambda files: (np.stack([face(f) for f in files]).astype(np.float32) - 127.5) / 128.0  # noqa: E731
    a, b = (model.predict(batch(f), verbose=0).astype(np.float64) for f in (files1, files2))
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (a, b))
    if metric == "cosine":
        return np.sum(a * b, axis=1)
    return np.sqrt(np.sum((a - b) ** 2, axis=1))


@pytest.fixture(scope="module")
def flat_faces(tmp_path_factory, sample_dir, val_pairs):
    """The pairsVal.txt faces copied into a flat folder under made-up names (no LFW layout), and a CSV
    beside it naming them, with every label spelling, a header and two folds."""
    root = tmp_path_factory.mktemp("flat")
    (root / "faces").mkdir()
    rels = list(dict.fromkeys(r for p in val_pairs for r in (p.path1, p.path2)))
    new = {r: f"faces/face {i:03d}.jpg" for i, r in enumerate(rels)}  # a space in every name
    for r, n in new.items():
        shutil.copyfile(sample_dir / "lfw" / r, root / n)
    rows = [(new[p.path1], new[p.path2], LABEL_SPELLINGS[k % 3][0 if p.same else 1], 1 + k % 2)
            for k, p in enumerate(val_pairs)]
    with open(root / "pairs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img1", "img2", "label", "fold"])
        w.writerows(rows)
    return root, rows


def read_scores(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_pairs_scores_match_numpy(flat_faces, val_pairs, tiny_embedder):
    root, rows = flat_faces
    model = tiny_embedder(1)
    for metric in ("cosine", "l2"):
        ps = score_pairs(model, pairs=root / "pairs.csv", metric=metric, verbose=0)  # images next to the CSV
        ref = numpy_scores(model, [root / r[0] for r in rows], [root / r[1] for r in rows], metric)
        np.testing.assert_allclose(ps.to_display(ps.scores), ref, atol=1e-5)
        np.testing.assert_array_equal(ps.labels, [p.same for p in val_pairs])
        np.testing.assert_array_equal(ps.folds, [r[3] for r in rows])
        assert [p.path1 for p in ps.pairs] == [r[0] for r in rows]


def test_csv_evaluation_equals_lfw_list_evaluation_and_uses_its_folds(flat_faces, sample_dir, val_pairs, tiny_embedder):
    root, rows = flat_faces
    model = tiny_embedder(2)
    csv_m = evaluate_pairs(model, pairs=str(root / "pairs.csv"), verbose=0).metrics
    # the same pairs as an LFW list, with the same two folds: every metric must agree
    lfw = [type(p)(p.name1, p.idx1, p.name2, p.idx2, p.same, r[3]) for p, r in zip(val_pairs, rows)]
    lfw_m = evaluate_pairs(model, sample_dir, lfw, verbose=0).metrics
    assert csv_m["folds"] == 2 and csv_m["pairs_accounting"]["evaluated"] == 60
    for key in ("auc", "eer_percent", "best_threshold_accuracy", "accuracy_mean", "best_threshold"):
        assert csv_m[key] == pytest.approx(lfw_m[key], abs=1e-9), key


def test_scores_csv_holds_every_pair_score(flat_faces, tmp_path, tiny_embedder):
    root, rows = flat_faces
    model = tiny_embedder(3)
    res = evaluate_to_dir(model, None, root / "pairs.csv", tmp_path / "ev", n_cases=0, metric="l2",
                          scores=tmp_path / "out" / "scores.csv", verbose=0)
    got = read_scores(tmp_path / "out" / "scores.csv")
    ref = numpy_scores(model, [root / r[0] for r in rows], [root / r[1] for r in rows], "l2")
    assert list(got[0]) == ["img1", "img2", "label", "score", "fold"]
    assert [(g["img1"], g["img2"], g["fold"]) for g in got] == [(r[0], r[1], str(r[3])) for r in rows]
    assert [g["label"] for g in got] == ["1" if r[2] in ("1", "same", "true") else "0" for r in rows]
    np.testing.assert_allclose([float(g["score"]) for g in got], ref, atol=1e-5)  # distances, as metrics.json
    assert res.metrics["score"] == "l2" and res.metrics["scores_file"].endswith("scores.csv")
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "scores.csv"]  # no temporary left behind


def test_scores_of_a_folded_lfw_list_number_folds_from_one(sample_dir, val_pairs, tmp_path):
    """An LFW list with a 2-fold header: scores.csv's fold column is 1..2; one fold: no fold column."""
    same = [p for p in val_pairs if p.same]
    diff = [p for p in val_pairs if not p.same]
    line = lambda p: (f"{p.name1}\t{p.idx1}\t{p.idx2}" if p.same  # noqa: E731
                      else f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}")
    lines = ["2\t15"] + [line(p) for p in same[:15] + diff[:15] + same[15:] + diff[15:]]
    (tmp_path / "pairs2.txt").write_text("\n".join(lines) + "\n")
    model = raw_pixels(SIZE)
    res = evaluate_pairs(model, sample_dir, tmp_path / "pairs2.txt", verbose=0)
    write_scores(res, tmp_path / "s2.csv")
    got = read_scores(tmp_path / "s2.csv")
    assert [g["fold"] for g in got] == ["1"] * 30 + ["2"] * 30
    expected = dict(zip(((p.path1, p.path2) for p in res.scores.pairs), res.scores.scores))
    for g in got:
        assert float(g["score"]) == pytest.approx(expected[(g["img1"], g["img2"])], abs=1e-12)
    write_scores(evaluate_pairs(model, sample_dir, val_pairs, verbose=0), tmp_path / "s1.csv")
    assert list(read_scores(tmp_path / "s1.csv")[0]) == ["img1", "img2", "label", "score"]


def _count_sniffs(monkeypatch) -> list:
    """Every call of :func:`is_pairs_csv`, wherever a module took the name from (the paths it was asked about)."""
    real, calls = pair_csv.is_pairs_csv, []

    def counting(path):
        calls.append(str(path))
        return real(path)

    for module in list(sys.modules.values()):
        if getattr(module, "is_pairs_csv", None) is real:
            monkeypatch.setattr(module, "is_pairs_csv", counting)
    return calls


def test_a_pairs_file_is_sniffed_once_per_evaluation(flat_faces, sample_dir, tmp_path, monkeypatch, capsys):
    root, _ = flat_faces
    calls = _count_sniffs(monkeypatch)
    evaluate_to_dir(raw_pixels(SIZE), None, root / "pairs.csv", tmp_path / "api", n_cases=0, verbose=0)
    assert calls == [str(root / "pairs.csv")]
    calls.clear()
    score_pairs(raw_pixels(SIZE), sample_dir, sample_dir / "pairsVal.txt", verbose=0)
    assert calls == [str(sample_dir / "pairsVal.txt")]
    calls.clear()
    assert main(["evaluate", "raw-pixels", "--eval-pairs", str(root / "pairs.csv"), "--image-size", "16",
                 "--cases", "0", "--out", str(tmp_path / "cli")]) == 0
    assert calls == [str(root / "pairs.csv")]
    capsys.readouterr()


# --- the command line ----------------------------------------------------------------------


def test_cli_csv_with_data_root_and_scores(sample_dir, val_pairs, tmp_path, capsys, tiny_embedder):
    """A CSV elsewhere whose paths are relative to --data; --scores checked against NumPy."""
    model = tiny_embedder(4)
    model.save(tmp_path / "emb.keras")
    lists = tmp_path / "lists"
    lists.mkdir()
    with open(lists / "val.csv", "w", newline="") as f:
        csv.writer(f).writerows([(p.path1, p.path2, int(p.same)) for p in val_pairs])  # no header
    code = main(["evaluate", str(tmp_path / "emb.keras"), "--data", str(sample_dir / "lfw"),
                 "--eval-pairs", str(lists / "val.csv"), "--scores", str(tmp_path / "scores.csv"),
                 "--out", str(tmp_path / "ev"), "--cases", "0"])
    out = capsys.readouterr().out
    assert code == 0 and str(tmp_path / "scores.csv") in out
    got = read_scores(tmp_path / "scores.csv")
    ref = numpy_scores(model, [sample_dir / "lfw" / p.path1 for p in val_pairs],
                       [sample_dir / "lfw" / p.path2 for p in val_pairs], "cosine")
    assert [(g["img1"], g["img2"], g["label"]) for g in got] == [(p.path1, p.path2, str(int(p.same)))
                                                                 for p in val_pairs]
    np.testing.assert_allclose([float(g["score"]) for g in got], ref, atol=1e-5)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    ref_m = evaluate_pairs(model, sample_dir, val_pairs, verbose=0).metrics  # the LFW list, read from the sample
    assert m["auc"] == pytest.approx(ref_m["auc"], abs=1e-9) and m["pairs_accounting"]["evaluated"] == 60


def test_cli_csv_errors_are_one_line_exit_2(flat_faces, tmp_path, capsys):
    root, _ = flat_faces
    bad = tmp_path / "bad.csv"
    bad.write_text("img1,img2,label\nfaces/face 000.jpg,faces/face 001.jpg,1\nfaces/face 000.jpg,x.jpg,perhaps\n")
    assert main(["evaluate", "raw-pixels", "--eval-pairs", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kerasface evaluate: error: {bad}, line 3: label must be 1/0, same/different or "
                   "true/false, got 'perhaps'")
    missing_images = tmp_path / "gone.csv"
    missing_images.write_text("a.jpg,b.jpg,1\n")
    assert main(["evaluate", "raw-pixels", "--eval-pairs", str(missing_images), "--on-missing", "error"]) == 2
    assert "a.jpg" in capsys.readouterr().err
    assert main(["evaluate", "raw-pixels", "--eval-pairs", str(root / "pairs.csv"), "--scores", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cli_pairs_found_next_to_data_and_folder_refused(sample_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no pairsVal.txt here: it is found next to --data, and the command says so
    code = main(["evaluate", "raw-pixels", "--data", str(sample_dir), "--eval-pairs", "pairsVal.txt",
                 "--image-size", "16", "--cases", "0", "--out", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"--eval-pairs pairsVal.txt is not in the working folder; using {sample_dir / 'pairsVal.txt'}" in out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["pairs_accounting"]["evaluated"] == 60
    (tmp_path / "lists").mkdir()
    assert main(["evaluate", "raw-pixels", "--data", str(sample_dir), "--eval-pairs", "lists"]) == 2
    err = capsys.readouterr().err
    assert "'lists' is a folder" in err and "not found" not in err
