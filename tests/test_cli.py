"""The ``kerasface`` command line (``kerasface.cli.main``) and ``train_pairs.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kerasface.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("vargface", "vargface-reduced", "vargface-lowlight", "vargface-reduced-lowlight")


def test_summary_json(capsys):
    assert main(["summary", "vargfacenet", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["trainable_params"] == 5_195_130
    assert d["name"] == "vargfacenet"
    assert d["total_params"] == d["trainable_params"] + d["non_trainable_params"]
    assert abs(d["macs"] - 525.62e6) / 525.62e6 < 0.05


def test_summary_list(capsys):
    assert main(["summary", "--list"]) == 0
    names = capsys.readouterr().out.split()
    assert {"vargfacenet", "vargfacenet_reduced", "vargfacenet_tiny"} <= set(names)


def test_summary_unknown_backbone(capsys):
    assert main(["summary", "resnet9000"]) == 2
    assert "resnet9000" in capsys.readouterr().err


def test_presets(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    from kerasface.presets import CLASSIFY_PRESETS, TRIPLET_PRESETS

    assert sorted(listed) == sorted(PRESETS + tuple(TRIPLET_PRESETS) + tuple(CLASSIFY_PRESETS))
    assert "facenet-nn2" in TRIPLET_PRESETS and "resnet34-arcface" in CLASSIFY_PRESETS
    scripts = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}
    assert scripts["thinresnet34-angproto-m2"] == "train_classify.py" and scripts["vargface"] == "train_pairs.py"


def test_train_missing_data_is_a_clean_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["train", "--data", str(missing), "--out", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    assert str(missing) in captured.err
    assert "error" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_unknown_preset_is_a_clean_error(capsys):
    assert main(["train", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_lowlight_grid_writes_png(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert main(["lowlight-grid", "--out", str(out), "-n", "3"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert str(out) in capsys.readouterr().out


def test_train_pairs_script_help():
    proc = subprocess.run([sys.executable, "train_pairs.py", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--data" in proc.stdout and "--epochs" in proc.stdout
    assert "--preset" in proc.stdout


@pytest.mark.parametrize("argv", [["train", "--epochs", "many"], ["summary", "--input-size", "x"], []])
def test_bad_command_lines_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
