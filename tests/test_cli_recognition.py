"""``kerasface verify`` / ``embed`` / ``find`` on real LFW photos: verdicts and exit statuses, files written
(or not), and every bad input as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasface.cli import exit_codes
from kerasface.cli.main import main
from kerasface.recognition.gallery import checkpoint_path, load_gallery
from kerasface.recognition.loading import load_face_model

SIZE = 32  # conftest.FACE_SIZE: the faces of dense_face_model


@pytest.fixture(scope="module")
def files(tmp_path_factory, sample_dir, dense_face_model, mtcnn_face_model):
    d = tmp_path_factory.mktemp("cli")
    dense_face_model().save(d / "plain.keras")
    # a Siamese-style verifier: two faces in, [different, same] out; no embedding output
    a, b = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    trunk = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    diff = keras.layers.Subtract()([trunk(a), trunk(b)])
    keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(diff)).save(d / "verifier.keras")
    (d / "not_a_model.keras").write_text("hello")
    (d / "empty_folder").mkdir()
    (d / "notes.txt").write_text("not a photo")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    lfw = sample_dir / "lfw"
    return {"dir": d, "plain": d / "plain.keras", "mtcnn": mtcnn_face_model, "verifier": d / "verifier.keras",
            "same": (lfw / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg", lfw / "Abdullah_Gul" / "Abdullah_Gul_0014.jpg"),
            "lfw": lfw}




def _run(capsys, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_same_and_different_exit_statuses(files, capsys):
    a, b = files["same"]
    code, out, _ = _run(capsys, ["verify", a, b, "--model", files["plain"], "--threshold", "-1", "--json"])
    r = json.loads(out)
    assert code == exit_codes.OK and r["same"] is True
    score = r["score"]
    ref = load_face_model(files["plain"])
    from kerasface.recognition.api import represent

    ea, eb = (represent(p, ref)[0]["embedding"] for p in (a, b))
    assert score == pytest.approx(float(np.dot(ea, eb)), abs=1e-6)
    code, out, _ = _run(capsys, ["verify", a, b, "--model", files["plain"], "--threshold", score - 0.001])
    assert code == exit_codes.OK and out.startswith("same person: cosine") and "given (--threshold)" in out
    code, out, _ = _run(capsys, ["verify", a, b, "--model", files["plain"], "--threshold", score + 0.001])
    assert code == exit_codes.DIFFERENT_PEOPLE == 1 and out.startswith("different people: cosine")
    assert len(out.strip().splitlines()) == 1


def _bad(capsys, argv, *needles):
    code, out, err = _run(capsys, argv)
    lines = err.strip().splitlines()
    assert code == exit_codes.BAD_INPUT, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith(f"kerasface {argv[0]}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert out == ""
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "unreadable", "not an image", "not a model", "folder not a run",
                                  "verifier", "no threshold", "unknown name"])
def test_verify_bad_input_is_one_line_and_exit_2(files, capsys, case):
    a, b = files["same"]
    d = files["dir"]
    argv = {
        "missing": (["verify", a, d / "nobody.jpg", "--model", files["plain"], "--threshold", 0], ["nobody.jpg"]),
        "unreadable": (["verify", a, d / "broken.jpg", "--model", files["plain"], "--threshold", 0],
                       ["broken.jpg", "corrupt"]),
        "not an image": (["verify", d / "notes.txt", b, "--model", files["plain"], "--threshold", 0],
                         ["notes.txt"]),
        "not a model": (["verify", a, b, "--model", d / "not_a_model.keras"], ["not_a_model.keras", "not a Keras"]),
        "folder not a run": (["verify", a, b, "--model", d / "empty_folder"], ["empty_folder", "model.keras"]),
        "verifier": (["verify", a, b, "--model", files["verifier"]], ["verifier.keras", "2 inputs"]),
        "no threshold": (["verify", a, b, "--model", files["plain"]], ["no decision threshold", "--threshold"]),
        "unknown name": (["verify", a, b, "--model", "no-such-model"], ["unknown model name 'no-such-model'",
                                                                      "dlib-resnet-v1"]),
    }[case]
    _bad(capsys, *argv[:1], *argv[1])


def test_verify_no_face_and_several_faces(files, capsys, detection_samples):
    multi, empty = detection_samples / "multiface.jpg", detection_samples / "no-faces.jpg"
    a = files["same"][0]
    _bad(capsys, ["verify", a, empty, "--model", files["mtcnn"]], "no-faces.jpg", "no face found")
    _bad(capsys, ["verify", multi, a, "--model", files["mtcnn"], "--pick", "only"], "multiface.jpg", "faces found",
         "--pick")
    code, out, _ = _run(capsys, ["verify", multi, a, "--model", files["mtcnn"], "--json"])  # largest face picked
    assert code in (0, 1) and json.loads(out)["faces"][0]["confidence"] >= 0.9


def _tree(root: Path, lfw: Path) -> list[str]:
    layout = {"x/y/one.jpg": "AJ_Cook/AJ_Cook_0001.jpg", "x/two.jpg": "Aaron_Guiel/Aaron_Guiel_0001.jpg",
              "three.jpg": "Abdullah_Gul/Abdullah_Gul_0013.jpg", "z/four.jpg": "AJ_Lamas/AJ_Lamas_0001.jpg"}
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lfw / src, root / rel)
    (root / "z" / "readme.txt").write_text("hello")
    return sorted(layout)


def test_embed_then_find(files, capsys, tmp_path):
    src = tmp_path / "photos"
    rels = _tree(src, files["lfw"])
    out = tmp_path / "emb.npz"
    code, stdout, err = _run(capsys, ["embed", src, "--out", out, "--model", files["plain"], "--quiet"])
    assert code == 0 and out.is_file() and not checkpoint_path(out).exists()
    assert "4 face(s) of 4 photo(s)" in stdout and "skipped 1 file(s): 1 not an image" in stdout
    g = load_gallery(out)
    assert sorted(g.paths) == rels and g.skipped == {"z/readme.txt": "z/readme.txt: not an image file (.txt)"}
    code, stdout, _ = _run(capsys, ["embed", src, "--out", tmp_path / "emb.csv", "--model", files["plain"],
                                    "--quiet"])
    assert code == 0 and len((tmp_path / "emb.csv").read_text().splitlines()) == 5
    # find with the npz: its own model, the query's own photo first at cosine 1
    code, stdout, _ = _run(capsys, ["find", src / "x" / "two.jpg", "--gallery", out, "--top", "2", "--json"])
    matches = json.loads(stdout)
    assert code == 0 and [m["rank"] for m in matches] == [1, 2]
    assert matches[0]["path"] == "x/two.jpg" and matches[0]["score"] == pytest.approx(1.0, abs=1e-5)
    sims = g.embeddings @ g.embeddings[g.paths.index("x/two.jpg")]
    assert matches[1]["path"] == g.paths[int(np.argsort(-sims)[1])]
    # a gallery folder gives the same ranking
    code, stdout, _ = _run(capsys, ["find", src / "x" / "two.jpg", "--gallery", src, "--model", files["plain"],
                                    "--top", "2", "--quiet"])
    assert code == 0 and stdout.splitlines()[0].split()[1] == "x/two.jpg"
    assert stdout.splitlines()[1].split()[1] == matches[1]["path"]


@pytest.mark.parametrize("case", ["suffix", "not a model", "verifier", "missing src", "no photos"])
def test_embed_bad_input_writes_nothing(files, capsys, tmp_path, case):
    src = tmp_path / "photos"
    _tree(src, files["lfw"])
    (tmp_path / "empty").mkdir()
    out = tmp_path / ("emb.txt" if case == "suffix" else "emb.npz")
    model = {"not a model": files["dir"] / "not_a_model.keras", "verifier": files["verifier"]}.get(case,
                                                                                                   files["plain"])
    where = {"missing src": tmp_path / "nowhere", "no photos": tmp_path / "empty"}.get(case, src)
    needle = {"suffix": "--out", "not a model": "not_a_model.keras", "verifier": "2 inputs",
              "missing src": "nowhere", "no photos": "nothing written"}[case]
    _bad(capsys, ["embed", where, "--out", out, "--model", model, "--quiet"], needle)
    assert not out.exists() and not checkpoint_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "photos"]


def test_find_bad_input(files, capsys, tmp_path):
    a = files["same"][0]
    _bad(capsys, ["find", a, "--gallery", tmp_path / "none.npz"], "none.npz")
    _bad(capsys, ["find", a, "--gallery", tmp_path / "nowhere", "--model", files["plain"]], "gallery not found",
         "nowhere")
    (tmp_path / "fake.npz").write_bytes(b"PK not really")
    _bad(capsys, ["find", a, "--gallery", tmp_path / "fake.npz"], "fake.npz", "kerasface embed")
    _bad(capsys, ["find", files["dir"] / "broken.jpg", "--gallery", files["lfw"] / "AJ_Cook", "--model",
                  files["plain"], "--quiet"], "broken.jpg")
