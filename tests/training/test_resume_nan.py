"""Killed and resumed training, and NaN losses: the run folder never holds a half-written or NaN model.

* ``test_sigkill_then_same_command_resumes``: the real thing. ``kerasface train`` runs in a
  subprocess, is killed with SIGKILL once its first epoch's backup exists, and the same command
  is run again: it resumes, ends with exactly ``EPOCHS`` epochs in the history, the optimizer's
  step counter in ``model.keras`` equals ``EPOCHS x steps per epoch``, and no temporary file is
  left.  Two TensorFlow start-ups with graph tracing of the tiny VarGFaceNet (~1-2 min here).
* The other tests run ``train_pairs`` in-process on a tiny stand-in backbone (seconds to trace).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

import kerasface.training.tasks.pairs as pairs_mod
from kerasface.models import SiameseVerifier
from kerasface.presets import get_pair_preset
from kerasface.training import train_pairs
from kerasface.training.callbacks import RunBackup

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 3
BATCH = 8


def _temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob(".*") if p.is_file()]


_TINY_CLI = """
import sys
import keras
import kerasface.training.tasks.pairs as p
from kerasface.models import SiameseVerifier

def build(cfg):  # a tiny backbone, run eagerly: quick to start, slow enough per epoch to be killed inside one
    backbone = keras.Sequential([keras.Input((cfg.image_size, cfg.image_size, 3)), keras.layers.Conv2D(4, 3, strides=4),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)], name="tiny")
    model = SiameseVerifier(backbone, hidden_units=8, dropout=0.0, name="tiny_verifier")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=True)
    return model

p.build_verifier = build
from kerasface.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_then_same_command_resumes_tiny(sample_dir, tmp_path, capsys):
    """The kill/resume test in CI: the real CLI and run folder code, a stand-in backbone (~30 s)."""
    script = tmp_path / "tiny_cli.py"
    script.write_text(_TINY_CLI)
    _kill_and_resume(sample_dir, tmp_path, capsys, [sys.executable, str(script)], batch=2,
                     flags=["--image-size", "16"])


@pytest.mark.slow
def test_sigkill_then_same_command_resumes(sample_dir, tmp_path, capsys):
    """``python -m kerasface.cli train --backbone vargfacenet_tiny ...`` killed and rerun (2-5 min: two tracings)."""
    _kill_and_resume(sample_dir, tmp_path, capsys, [sys.executable, "-m", "kerasface.cli"], batch=BATCH,
                     flags=["--backbone", "vargfacenet_tiny", "--image-size", "32", "--group-conv", "depthwise"])


def _kill_and_resume(sample_dir, tmp_path, capsys, prog, batch, flags):
    run_dir = tmp_path / "run"
    cmd = [*prog, "train", *flags, "--epochs", str(EPOCHS), "--batch-size", str(batch), "--seed", "0",
           "--verify-every", "0", "--data", str(sample_dir), "--run-dir", str(run_dir), "--quiet"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log1, stderr=subprocess.STDOUT)
    state = run_dir / "backup" / RunBackup.STATE
    deadline = time.monotonic() + 400
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, \
        f"the first run ended before it could be killed:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    assert state.exists(), "no epoch finished in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log1.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < EPOCHS
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] is False
    # What was on disk at the kill is whole: the model of a finished epoch loads.
    keras.saving.load_model(run_dir / "model.keras")

    second = subprocess.run(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, timeout=500)
    assert second.returncode == 0, second.stdout[-3000:]
    assert f"resuming {run_dir} after {killed_at} finished epoch(s)" in second.stdout
    assert f"resuming from the backup of epoch {killed_at}" in second.stdout

    history = json.loads((run_dir / "history.json").read_text())
    assert all(len(col) == EPOCHS for col in history.values()), history
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] is True and metrics["epochs_run"] == EPOCHS and len(metrics["epoch_seconds"]) == EPOCHS
    csv_rows = (run_dir / "history.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + EPOCHS
    model = keras.saving.load_model(run_dir / "model.keras")
    assert not model.compiled  # the final artefact carries no optimizer state (the backup did)
    assert metrics["epochs_run"] == EPOCHS and len(metrics["epoch_seconds"]) == EPOCHS
    assert not (run_dir / "backup").exists()         # removed once the run is complete
    assert _temporaries(run_dir) == []
    # The same command once more: the run is complete, nothing is overwritten.
    # The same command line once more (in-process: these errors come before any training): nothing is touched.
    from kerasface.cli import main

    argv = cmd[len(prog):]
    stamp = (run_dir / "model.keras").stat().st_mtime_ns
    assert main(argv) == 2 and "already holds a complete run" in capsys.readouterr().err
    assert main([a if a != str(EPOCHS) else "5" for a in argv]) == 2
    assert "other settings (epochs: 3 -> 5)" in capsys.readouterr().err
    assert (run_dir / "model.keras").stat().st_mtime_ns == stamp


# --- in-process runs on a tiny backbone -----------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kerasface_tests")
class NaNAfter(keras.optimizers.schedules.LearningRateSchedule):
    """1e-3, then NaN from optimizer step ``step`` on: the weights turn NaN, the next loss is NaN."""

    def __init__(self, step):
        self.step = step

    def __call__(self, step):
        return keras.ops.where(step < self.step, 1e-3, float("nan"))

    def get_config(self):
        return {"step": self.step}


def _tiny_verifier(lr):
    def build(cfg):
        backbone = keras.Sequential([keras.Input((cfg.image_size, cfg.image_size, 3)),
                                     keras.layers.Conv2D(4, 3, strides=4),
                                     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)], name="tiny")
        model = SiameseVerifier(backbone, hidden_units=8, dropout=0.0, name="tiny_verifier")
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model
    return build


@pytest.fixture
def tiny_cfg(sample_dir):
    return get_pair_preset("vargface").override(image_size=16, epochs=EPOCHS, batch_size=BATCH, seed=0,
                                                verify_every=0, data=str(sample_dir))


def test_nan_loss_stops_with_step_and_keeps_last_good_model(tiny_cfg, tmp_path, monkeypatch):
    steps = math.ceil(180 / BATCH)  # 180 training pairs in the sample
    # update 29 (iteration 28) uses lr NaN -> the loss of batch 30 (epoch 2, step 7) is NaN
    nan_step = steps + 5
    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(NaNAfter(nan_step)))
    run_dir = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2, step 7 \(global step 30\)"):
        train_pairs(tiny_cfg, run_dir=run_dir, verbose=0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["complete"] is False and metrics["epochs_run"] == 1
    assert metrics["stopped"] == {"epoch": 2, "step": 7, "global_step": 30, "loss": None, "reason": "non-finite loss"}
    history = json.loads((run_dir / "history.json").read_text())
    assert all(len(col) == 1 for col in history.values())
    model = keras.saving.load_model(run_dir / "model.keras")
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)
    assert not model.compiled  # an inference artefact: the optimizer state stays in backup/ (epoch 1, below)
    assert json.loads((run_dir / "backup" / RunBackup.STATE).read_text())["epoch"] == 1
    assert _temporaries(run_dir) == []


def test_nan_in_first_epoch_leaves_no_model(tiny_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(NaNAfter(2)))
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 4"):
        train_pairs(tiny_cfg, run_dir=tmp_path / "run", verbose=0)
    assert not (tmp_path / "run" / "model.keras").exists()
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["complete"] is False and m["epochs_run"] == 0 and m["stopped"]["step"] == 4


class _Crash(Exception):
    pass


def test_interrupted_run_resumes_from_backup_in_process(tiny_cfg, tmp_path, monkeypatch):
    """A crash inside epoch 2 (after the writer's files, before nothing else) and a rerun: 3 epochs, right steps."""
    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(1e-3))
    real = RunBackup.on_epoch_end
    calls = []

    def crash_after_first(self, epoch, logs=None):
        calls.append(epoch)
        if epoch == 1:                 # epoch 2's files are written by RunFolderWriter, its backup never is
            raise _Crash
        real(self, epoch, logs)

    monkeypatch.setattr(RunBackup, "on_epoch_end", crash_after_first)
    run_dir = tmp_path / "run"
    with pytest.raises(_Crash):
        train_pairs(tiny_cfg, run_dir=run_dir, verbose=0)
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 2   # one epoch ahead of the backup
    (run_dir / ".model-leftover.keras").write_bytes(b"half")                      # what a kill mid-save leaves
    monkeypatch.setattr(RunBackup, "on_epoch_end", real)
    result = train_pairs(tiny_cfg, run_dir=run_dir, verbose=0)
    assert result.metrics["complete"] is True and result.metrics["epochs_run"] == EPOCHS
    assert all(len(c) == EPOCHS for c in json.loads((run_dir / "history.json").read_text()).values())
    assert int(result.model.optimizer.iterations) == EPOCHS * math.ceil(180 / BATCH)
    assert _temporaries(run_dir) == [] and not (run_dir / "backup").exists()


def test_bad_images_are_skipped_counted_and_reported_at_the_end(tiny_cfg, sample_dir, tmp_path, monkeypatch, capsys):
    """A corrupt and a missing training image: the run completes and metrics.json counts both; or it stops at
    start-up."""
    import shutil

    from kerasface.cli import main
    from kerasface.data import CorruptImageError, parse_pairs

    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    pairs = parse_pairs(data / "pairsTrain.txt")
    (data / "lfw" / pairs[0].path1).write_bytes(b"\xff\xd8 cut off")           # corrupt JPEG
    (data / "lfw" / pairs[-1].path2).unlink()                                  # missing file
    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(1e-3))
    cfg = tiny_cfg.override(data=str(data), epochs=1)
    assert main(["train", "--data", str(data), "--image-size", "16", "--epochs", "1", "--batch-size", "8",
                 "--verify-every", "0", "--run-dir", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    r = metrics["data"]["train"]
    assert metrics["complete"] is True
    assert r["corrupt"] >= 1 and r["corrupt_images"] == 1 and r["missing"] >= 1 and r["missing_images"] == 1
    assert r["kept"] == r["requested"] - r["corrupt"] - r["missing"]
    assert r["corrupt_names"] == [pairs[0].path1] and r["missing_names"] == [pairs[-1].path2]
    assert f"train pairs skipped: {r['missing']} naming missing images, {r['corrupt']} touching corrupt images" in out
    # --on-corrupt error: the start-up validation pass stops the run before any training
    with pytest.raises(CorruptImageError, match=pairs[0].path1):
        train_pairs(cfg.override(on_error="error"), run_dir=tmp_path / "run2", verbose=0)
    assert not (tmp_path / "run2" / "model.keras").exists()
    # --on-missing error through the CLI: exit 2 naming the missing image
    assert main(["train", "--data", str(data), "--on-missing", "error", "--epochs", "1",
                 "--run-dir", str(tmp_path / "run3")]) == 2
    assert pairs[-1].path2 in capsys.readouterr().err


def test_unwritable_out_and_missing_data_are_clean_cli_errors(sample_dir, tmp_path, capsys):
    """Exit 2 with one line naming the path (root ignores chmod, so a regular file stands in the way)."""
    from kerasface.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["train", "--data", str(sample_dir), "--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert "kerasface train: error: cannot create the output folder" in err and str(blocker) in err
    assert main(["train", "--data", str(sample_dir), "--run-dir", str(blocker / "run")]) == 2
    assert "cannot write the run folder" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


# --- train-triplet: a NaN loss stops the run and keeps the last good epoch ------------------------------


def _micro_embedder(input_shape=(32, 32, 3), embedding_dim=16, **_):
    x = keras.Input(input_shape, name="image")
    y = keras.layers.Conv2D(4, 3, strides=4, name="c1")(x)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(embedding_dim, name="fc")(y), name="micro_nan")


@pytest.mark.parametrize("nan_after, epochs_kept", [(7 + 2, 1), (2, 0)])
def test_triplet_nan_loss_stops_and_keeps_the_last_good_epoch(tmp_path, monkeypatch, nan_after, epochs_kept):
    """7 P x K batches an epoch on the sample: NaN learning rate from step 9 (epoch 2) or step 2 (epoch 1)."""
    from kerasface.models import registry
    from kerasface.presets import get_triplet_preset
    from kerasface.training.tasks.triplet import train_triplet

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    from kerasface.optimizers import FusedAdam
    from kerasface.training.tasks import triplet_model

    monkeypatch.setattr(triplet_model, "FusedAdam", lambda lr=1e-3, **kw: FusedAdam(NaNAfter(nan_after), **kw))
    cfg = get_triplet_preset("facenet-nn2").override(
        backbone="micro_nan", image_size=32, mining="semi_hard", batch_size=32, k_images=4, epochs=3,
        chunk_size=1000, images_per_identity=10, center_crop=0.6, probe_size=32, verify_every=0)
    run_dir = tmp_path / "run"
    if epochs_kept == 0:
        with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 1, chunk 1.*no model was written"):
            train_triplet(cfg, run_dir=run_dir, verbose=0)
        assert not (run_dir / "model.keras").exists()
        assert json.loads((run_dir / "metrics.json").read_text())["nan"]["epoch"] == 1
        return
    result = train_triplet(cfg, run_dir=run_dir, verbose=0)
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["complete"] is False and m["epochs_run"] == 1
    assert "loss became nan at epoch 2, chunk 1; the run folder keeps the models of epoch 1" in m["stopped"]
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 1
    for name in ("model.keras", "triplet.keras"):
        saved = keras.saving.load_model(run_dir / name, compile=False)
        assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in saved.weights), name
    # the final evaluation used those weights, not the NaN ones
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in result.model.weights)
    assert m["verification"]["auc"] is not None


class _TripletCrash(Exception):
    pass


def test_triplet_run_interrupted_then_resumed(tmp_path, monkeypatch):
    """train-triplet killed after epoch 2's files but before its backup; the same call resumes at epoch 2."""
    from kerasface.models import registry
    from kerasface.presets import get_triplet_preset
    from kerasface.training.tasks.triplet import train_triplet

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    cfg = get_triplet_preset("facenet-nn2").override(
        backbone="micro_nan", image_size=32, mining="semi_hard", batch_size=32, k_images=4, epochs=3,
        chunk_size=1000, images_per_identity=10, center_crop=0.6, probe_size=32, verify_every=0)
    run_dir = tmp_path / "run"
    real = RunBackup.save

    def crash(self, epochs_done, model=None):
        if epochs_done == 2:
            raise _TripletCrash
        real(self, epochs_done, model)

    monkeypatch.setattr(RunBackup, "save", crash)
    with pytest.raises(_TripletCrash):
        train_triplet(cfg, run_dir=run_dir, verbose=0)
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 2
    assert json.loads((run_dir / "backup" / RunBackup.STATE).read_text())["epoch"] == 1
    monkeypatch.setattr(RunBackup, "save", real)
    result = train_triplet(cfg, run_dir=run_dir, verbose=0)
    h = json.loads((run_dir / "history.json").read_text())
    assert h["batches"] == [7, 7, 7] and result.metrics["complete"] is True
    assert result.metrics["images_seen"] == 3 * 7 * 32 and len(result.metrics["epoch_seconds"]) == 3
    assert int(result.model.optimizer.iterations) == 3 * 7
    assert not (run_dir / "backup").exists() and _temporaries(run_dir) == []
    with pytest.raises(ValueError, match="already holds a complete run"):
        train_triplet(cfg, run_dir=run_dir, verbose=0)
