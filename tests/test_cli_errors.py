"""One-line errors instead of tracebacks (issue 16, sections 4, 5 and 7): each probe of the red team.

Flags out of range are refused where their range is declared (the preset schema for the trainers,
``kerasface.config.COMMAND_SETTINGS`` for evaluate / align / pack / verify / embed / find): one line
naming the flag, exit 2, before anything runs.  A model file that exists but cannot be loaded is named
with the reason, not "not found"; any unexpected error is one line with its type (``--verbose`` shows
the traceback).
"""

from __future__ import annotations

import json
import zipfile

import keras
import pytest

from kerasface.cli import exit_codes, main


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("argv, words", [
    (["train", "--epochs", "0"], "epochs must be >= 1, got 0"),
    (["train", "--epochs", "-1"], "epochs must be >= 1, got -1"),
    (["train", "--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["train", "--image-size", "0"], "image_size must be >= 1, got 0"),
    (["train", "--learning-rate", "-1"], "learning_rate must be > 0, got -1.0"),
    (["train", "--learning-rate", "nan"], "learning_rate must be > 0, got nan"),
    (["train", "--center-crop", "nan"], "center_crop must be in (0, 1], got nan"),
    (["train-classify", "--center-crop", "0"], "center_crop must be in (0, 1], got 0.0"),
    (["evaluate", "raw-pixels", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["evaluate", "raw-pixels", "--batch-size", "-3"], "argument --batch-size: must be >= 1, got -3"),
    (["evaluate", "raw-pixels", "--center-crop", "nan"], "argument --center-crop: must be in (0, 1], got nan"),
    (["evaluate", "raw-pixels", "--center-crop", "0"], "argument --center-crop: must be in (0, 1], got 0.0"),
    (["evaluate", "raw-pixels", "--center-crop", "-1"], "argument --center-crop: must be in (0, 1], got -1.0"),
    (["evaluate", "raw-pixels", "--image-size", "0"], "argument --image-size: must be >= 1, got 0"),
    (["pack", "a", "b", "--jpeg-quality", "-1"], "argument --jpeg-quality: must be in [1, 100], got -1"),
    (["pack", "a", "b", "--shards", "0"], "argument --shards: must be >= 1, got 0"),
    (["align", "a", "b", "--limit", "-1"], "argument --limit: must be >= 1, got -1"),
    (["align", "a", "b", "--jpeg-quality", "101"], "argument --jpeg-quality: must be in [1, 100], got 101"),
    (["align", "a", "b", "--min-confidence", "1.5"], "argument --min-confidence: must be in [0, 1], got 1.5"),
    (["embed", "src", "--out", "e.npz", "--every", "0"], "argument --every: must be >= 1, got 0"),
    (["embed", "src", "--out", "e.npz", "--batch-size", "-2"], "argument --batch-size: must be >= 1, got -2"),
    (["embed", "src", "--out", "e.npz", "--min-confidence", "nan"],
     "argument --min-confidence: must be in [0, 1], got nan"),
    (["find", "a.jpg", "--gallery", "g.npz", "--top", "0"], "argument --top: must be >= 1, got 0"),
    (["verify", "a.jpg", "b.jpg", "--min-confidence", "-0.1"],
     "argument --min-confidence: must be in [0, 1], got -0.1"),
])
def test_values_out_of_range_are_one_line_naming_the_setting_exit_2(argv, words, tmp_path, capsys):
    run_dir = tmp_path / "run"
    extra = ["--run-dir", str(run_dir)] if argv[0].startswith("train") else []
    try:
        code = main([*argv, *extra])
    except SystemExit as e:  # argparse: the flag's type refused the value
        code = e.code
    assert code == exit_codes.BAD_INPUT
    assert words in _one_error_line(capsys)
    assert not run_dir.exists()  # refused before any run folder exists


def _tiny_embedder(tmp_path, inputs=(16, 16, 3)):
    x = keras.Input(inputs)
    y = keras.layers.Flatten()(x) if len(inputs) > 1 else x
    model = keras.Model(x, keras.layers.Dense(4)(y))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _rewrite_config(path, change):
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    change(cfg)
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)


def _unregister(cfg):
    cfg["config"]["layers"][-1]["class_name"] = "NoSuchLayer"
    cfg["config"]["layers"][-1]["module"] = "nowhere.layers"


def _tamper(cfg):
    cfg["config"]["layers"][-1]["config"]["units"] = "four"


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "cannot load the model"),
    (lambda p: _rewrite_config(p, _unregister), "cannot load the model"),
    (lambda p: _rewrite_config(p, _tamper), "cannot load the model"),
])
def test_evaluate_names_a_model_file_that_exists_but_does_not_load(sample_dir, tmp_path, capsys, damage, words):
    path = _tiny_embedder(tmp_path)
    damage(path)
    code = main(["evaluate", str(path), "--data", str(sample_dir), "--out", str(tmp_path / "eval")])
    line = _one_error_line(capsys)
    assert code == exit_codes.BAD_INPUT and words in line and str(path) in line and "not found" not in line


def test_evaluate_on_a_model_with_a_vector_input_is_one_line(sample_dir, tmp_path, capsys):
    path = _tiny_embedder(tmp_path, inputs=(12,))
    code = main(["evaluate", str(path), "--data", str(sample_dir), "--out", str(tmp_path / "eval")])
    line = _one_error_line(capsys)
    assert code == exit_codes.BAD_INPUT and "kerasface evaluate: error:" in line and "not face images" in line


def test_an_unexpected_error_is_one_line_with_its_type_and_verbose_shows_the_traceback(monkeypatch, capsys):
    from kerasface.cli import presets

    def broken(args):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(presets, "run", broken)
    assert main(["presets"]) == exit_codes.FAILURE
    line = _one_error_line(capsys)
    assert "kerasface presets: error: IndexError: tuple index out of range" in line and "--verbose" in line
    with pytest.raises(IndexError):
        main(["--verbose", "presets"])


def test_command_settings_ranges_refuse_nan_and_infinity():
    from kerasface.config import COMMAND_SETTINGS, check_command_setting

    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="--center-crop must be in"):
            check_command_setting("center_crop", value)
    assert check_command_setting("center_crop", 1.0) == 1.0 and check_command_setting("limit", None) is None
    assert COMMAND_SETTINGS["jpeg_quality"].describe_range() == "in [1, 100]"


def test_the_python_calls_check_the_same_declared_ranges():
    from kerasface.data.align import AlignOptions
    from kerasface.recognition.api import find
    from kerasface.recognition.gallery import embed_tree

    with pytest.raises(ValueError, match=r"^min_confidence must be in \[0, 1\], got nan$"):
        AlignOptions(min_confidence=float("nan"))
    with pytest.raises(ValueError, match=r"^center_crop must be in \(0, 1\], got 0.0$"):
        AlignOptions(center_crop=0.0)
    with pytest.raises(ValueError, match="^every must be >= 1, got 0$"):
        embed_tree("no-such-folder", None, every=0)
    with pytest.raises(ValueError, match="^batch_size must be >= 1, got 0$"):
        embed_tree("no-such-folder", None, batch_size=0)
    with pytest.raises(ValueError, match="^top must be >= 1, got 0$"):
        find("a.jpg", "no-such-gallery", top=0)
