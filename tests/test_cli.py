"""The ``kerasface`` command line (``kerasface.cli.main``) and ``train_pairs.py``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from kerasface.cli import build_parser, exit_codes, main
from kerasface.cli import train as cli_train
from kerasface.cli.flags import flag_names
from kerasface.config import ClassifyExperiment, PairExperiment, TripletExperiment, setting_info

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("vargface", "vargface-reduced", "vargface-lowlight", "vargface-reduced-lowlight", "vargface-init")


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


# --- the redesigned front door: generated flags, aliases, light start-up, exit codes ------------

KINDS = {"vargface": PairExperiment, "facenet-nn2": TripletExperiment, "thinresnet34-amsoftmax": ClassifyExperiment}


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


@pytest.mark.parametrize("preset, schema", KINDS.items())
def test_generated_flags_cover_every_schema_field(preset, schema):
    """`train --preset P` gets one flag per field of P's schema, each with help; a field without a flag fails."""
    train = _subparser(build_parser(preset), "train")
    options = {s: a for a in train._actions for s in a.option_strings}
    for f in dataclasses.fields(schema):
        names = flag_names(f)
        if f.name in ("name", "description"):
            assert names == [], f.name  # chosen with --preset
            continue
        assert names, f"{schema.__name__}.{f.name} has no flag"
        for n in names:
            assert options[n].dest == f.name and options[n].help, n
        assert setting_info(f).help in options[names[0]].help


def test_every_flag_of_every_command_has_help():
    for preset in KINDS:
        parser = build_parser(preset)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for command, p in sub.choices.items():
            for action in p._actions:
                assert action.help and action.help.strip(), (command, action.option_strings or action.dest)


def test_train_preset_of_another_trainer_gets_its_flags_without_rewriting_argv():
    argv = ["train", "--preset", "facenet-nn2", "--mining", "batch_hard", "--holdout-folds", "9,10", "--no-l2-pooling"]
    args = build_parser("facenet-nn2").parse_args(argv)
    assert (args.command, args.kind, args.preset) == ("train", "triplet", "facenet-nn2")
    assert (args.mining, args.holdout_folds, args.l2_pooling) == ("batch_hard", (9, 10), False)
    from kerasface.cli.main import preset_in

    assert preset_in(argv) == "facenet-nn2" and preset_in(["--verbose", "train", "--preset=incres-teacher"]) == \
        "incres-teacher" and preset_in(["presets"]) is None and preset_in(["evaluate", "m.keras"]) is None


def test_deprecated_spellings_work_and_warn(capsys):
    args = build_parser().parse_args(["train", "--val-pairs", "v.txt", "--augment"])
    assert (args.eval_pairs, args.augment) == ("v.txt", "flip")
    err = capsys.readouterr().err
    assert "--val-pairs is now --eval-pairs" in err and "bare --augment is now --augment flip" in err
    args = build_parser().parse_args(["train", "--eval-pairs", "v.txt", "--augment", "none", "--on-corrupt", "error"])
    assert (args.eval_pairs, args.augment, args.on_error) == ("v.txt", "none", "error")
    assert "deprecated" not in capsys.readouterr().err
    argv = ["train", "--preset", "incres-teacher", "--objective", "report002"]
    args = build_parser("incres-teacher").parse_args(argv)
    assert args.objective == "distillation" and "--objective report002 is now --objective distillation" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--augment", "jitter"])
    args = build_parser().parse_args(["evaluate", "raw-pixels", "--pairs", "p.txt"])
    assert args.pairs == "p.txt" and "--pairs is now --eval-pairs" in capsys.readouterr().err


def _fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("argv", [["--help"], ["presets"], ["train", "--help"],
                                  ["train", "--preset", "facenet-nn2", "--help"], ["train-classify", "--help"]])
def test_help_and_presets_import_neither_keras_nor_tensorflow(argv):
    p = _fresh(f"""
import runpy, sys
sys.argv = ["kerasface", *{argv!r}]
try:
    runpy.run_module("kerasface", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
print("HEAVY", sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
""")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "HEAVY []" in p.stdout


def test_python_dash_m_kerasface_and_quiet_tensorflow():
    """`python -m kerasface` runs the command; TensorFlow's start-up lines stay out of stderr by default."""
    p = subprocess.run([sys.executable, "-m", "kerasface", "summary", "--list"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "vargfacenet_tiny" in p.stdout.split()
    for noise in ("absl::InitializeLog", "cudart_stub", "cpu_feature_guard", "cuInit", "oneDNN"):
        assert noise not in p.stderr, p.stderr


def _fake_trainer(monkeypatch, behaviour):
    calls = []

    def train(cfg, run_dir=None, verbose="auto", runtime=None, run_name=None):
        calls.append({"cfg": cfg, "run_dir": run_dir, "run_name": run_name})
        return behaviour(cfg)

    monkeypatch.setattr(cli_train, "_trainer", lambda kind: train)
    return calls


def _triplet_metrics(**extra):
    step = {"loss": 0.5, "probe_mean_distance": 0.01}
    return {"epochs_run": 1, "train_images": 10, "train_identities": 2, "first": step, "final": step, **extra}


def test_exit_codes_are_distinct_and_documented(capsys):
    codes = [exit_codes.OK, exit_codes.FAILURE, exit_codes.BAD_INPUT, exit_codes.NON_FINITE_LOSS,
             exit_codes.COLLAPSED, exit_codes.INTERRUPTED]
    assert codes == [0, 1, 2, 3, 4, 130] and set(exit_codes.EXIT_CODES) == set(codes)
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code, text in exit_codes.EXIT_CODES.items():
        assert f"{code:<4} {text}" in out


def test_nan_exits_3(monkeypatch, capsys):
    def nan(cfg):
        raise FloatingPointError("the training loss became nan at epoch 1: runs/x")

    _fake_trainer(monkeypatch, nan)
    assert main(["train", "--epochs", "1"]) == exit_codes.NON_FINITE_LOSS == 3
    assert "loss became nan" in capsys.readouterr().err


def test_collapse_exits_4_and_a_triplet_nan_stop_exits_3(monkeypatch, capsys):
    _fake_trainer(monkeypatch, lambda cfg: SimpleNamespace(run_dir="r", metrics=_triplet_metrics(
        stopped="embeddings collapsed at epoch 1", collapse={"epoch": 1})))
    assert main(["train-triplet", "--epochs", "1"]) == exit_codes.COLLAPSED == 4
    assert "kerasface train-triplet: stopped: embeddings collapsed" in capsys.readouterr().err
    _fake_trainer(monkeypatch, lambda cfg: SimpleNamespace(run_dir="r", metrics=_triplet_metrics(
        stopped="the training loss became nan at epoch 2", collapse=None)))
    assert main(["train", "--preset", "facenet-nn2", "--epochs", "2"]) == exit_codes.NON_FINITE_LOSS


def test_interrupt_exits_130_and_bad_input_2(monkeypatch, capsys):
    def interrupted(cfg):
        raise KeyboardInterrupt

    _fake_trainer(monkeypatch, interrupted)
    assert main(["train-classify", "--epochs", "1"]) == exit_codes.INTERRUPTED == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert main(["train", "--preset", "thinresnet34-amsoftmax", "--m-images", "1", "--objective", "angproto"]) == 2
    assert "kerasface train-classify: error" in capsys.readouterr().err


def test_run_name_says_the_backbone_when_a_flag_changes_it(monkeypatch):
    calls = _fake_trainer(monkeypatch, lambda cfg: SimpleNamespace(run_dir="r", metrics=_triplet_metrics()))
    assert main(["train", "--preset", "facenet-nn2", "--backbone", "resnet18", "--epochs", "1"]) == 0
    assert main(["train", "--preset", "facenet-nn2", "--backbone", "facenet_nn2", "--epochs", "1"]) == 0
    assert [c["run_name"] for c in calls] == ["facenet-nn2-resnet18", "facenet-nn2"]
    assert calls[0]["cfg"].backbone == "resnet18" and calls[0]["cfg"].name == "facenet-nn2"
