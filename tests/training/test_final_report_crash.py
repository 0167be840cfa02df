"""A crash during the final evaluation loses nothing (issue 16, section 2).

Every epoch is finished, then the run dies while the final verification / report is written (an
exception injected in the task's ``report``, the last step before ``metrics.json`` says
``complete: true``; a kill -9 there leaves the same files).  The backup must still be there, and
the same call again must complete the report from it without training again: the optimizer's step
counter, the history and ``model.keras`` are those of the first run.  One test per trainer (the
runner's two kinds of task, train-pairs, train-triplet, train-classify), on the tiniest models.
"""

from __future__ import annotations

import json
import math

import pytest
from test_resume_nan import _micro_embedder, _tiny_verifier  # tests/training is on sys.path (rootdir imports)
from test_runner import EPOCHS, STEPS, ToyLoopTask, ToyTask

from kerasface.training.callbacks import RunBackup


class _KilledDuringReport(Exception):
    pass


def _crash_once_in_report(monkeypatch, cls):
    real = cls.report
    calls = []

    def report(self, metrics, model, run):
        calls.append(1)
        if len(calls) == 1:
            raise _KilledDuringReport
        return real(self, metrics, model, run)

    monkeypatch.setattr(cls, "report", report)
    return calls


def _check_left_for_the_rerun(run_dir, epochs):
    """What the crash left: every epoch's files, metrics not complete, the backup of the last epoch."""
    assert json.loads((run_dir / "metrics.json").read_text())["complete"] is False
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == epochs
    assert RunBackup.saved_epoch(run_dir / "backup") == epochs
    return (run_dir / "model.keras").stat().st_mtime_ns


def _check_completed(run_dir, metrics, epochs, stamp):
    assert metrics["complete"] is True and metrics["epochs_run"] == epochs
    assert json.loads((run_dir / "metrics.json").read_text())["complete"] is True
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == epochs
    assert (run_dir / "model.keras").stat().st_mtime_ns == stamp  # not trained (nor saved) again
    assert not (run_dir / "backup").exists()                       # gone only now that the run is complete


@pytest.mark.parametrize("make", [ToyTask, ToyLoopTask], ids=["fit", "loop"])
def test_runner_crash_in_the_final_report_then_the_same_call_completes_it(tmp_path, monkeypatch, make, caplog):
    from kerasface.training.runner import run_training

    run_dir = tmp_path / "run"
    _crash_once_in_report(monkeypatch, make)
    with pytest.raises(_KilledDuringReport):
        run_training(make(tmp_path), run_dir=run_dir, verbose=0)
    stamp = _check_left_for_the_rerun(run_dir, EPOCHS)
    with caplog.at_level("INFO", logger="kerasface.training"):
        result = run_training(make(tmp_path), run_dir=run_dir, verbose=0)
    assert f"all {EPOCHS} epoch(s) are finished: completing the final evaluation and report" in caplog.text
    _check_completed(run_dir, result.metrics, EPOCHS, stamp)
    assert int(result.model.optimizer.iterations) == EPOCHS * STEPS  # the restored model of the last epoch
    with pytest.raises(ValueError, match="already holds a complete run"):
        run_training(make(tmp_path), run_dir=run_dir, verbose=0)


def test_train_pairs_crash_in_the_final_report(sample_dir, tmp_path, monkeypatch):
    import kerasface.training.tasks.pairs as pairs_mod
    from kerasface.presets import get_pair_preset
    from kerasface.training import train_pairs

    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(1e-3))
    cfg = get_pair_preset("vargface").override(image_size=16, epochs=2, batch_size=8, seed=0, verify_every=0,
                                               data=str(sample_dir))
    run_dir = tmp_path / "run"
    _crash_once_in_report(monkeypatch, pairs_mod.PairTask)
    with pytest.raises(_KilledDuringReport):
        train_pairs(cfg, run_dir=run_dir, verbose=0)
    stamp = _check_left_for_the_rerun(run_dir, 2)
    result = train_pairs(cfg, run_dir=run_dir, verbose=0)
    _check_completed(run_dir, result.metrics, 2, stamp)
    assert int(result.model.optimizer.iterations) == 2 * math.ceil(result.metrics["train_pairs"] / 8)
    assert result.metrics["verification"]["auc"] is not None and (run_dir / "roc.png").is_file()


def test_train_triplet_crash_in_the_final_report(tmp_path, monkeypatch):
    from kerasface.models import registry
    from kerasface.presets import get_triplet_preset
    from kerasface.training.tasks import triplet as triplet_mod

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    cfg = get_triplet_preset("facenet-nn2").override(
        backbone="micro_nan", image_size=32, mining="semi_hard", batch_size=32, k_images=4, epochs=2,
        chunk_size=1000, images_per_identity=10, center_crop=0.6, probe_size=32, verify_every=0)
    run_dir = tmp_path / "run"
    _crash_once_in_report(monkeypatch, triplet_mod.TripletTask)
    with pytest.raises(_KilledDuringReport):
        triplet_mod.train_triplet(cfg, run_dir=run_dir, verbose=0)
    stamp = _check_left_for_the_rerun(run_dir, 2)
    result = triplet_mod.train_triplet(cfg, run_dir=run_dir, verbose=0)
    _check_completed(run_dir, result.metrics, 2, stamp)
    assert int(result.model.optimizer.iterations) == 2 * 7  # 7 P x K batches an epoch on the sample


def test_train_classify_crash_in_the_final_report(sample_dir, tmp_path, monkeypatch):
    from kerasface.models import registry
    from kerasface.presets import get_classify_preset
    from kerasface.training.tasks import classify as classify_mod

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    cfg = get_classify_preset("thinresnet34-amsoftmax").override(backbone="micro_nan", image_size=32, epochs=2,
                                                                 batch_size=32, verify_every=0)
    run_dir = tmp_path / "run"
    _crash_once_in_report(monkeypatch, classify_mod.ClassifyTask)
    with pytest.raises(_KilledDuringReport):
        classify_mod.train_classifier(cfg, run_dir=run_dir, verbose=0)
    stamp = _check_left_for_the_rerun(run_dir, 2)
    classifier_stamp = (run_dir / "classifier.keras").stat().st_mtime_ns
    result = classify_mod.train_classifier(cfg, run_dir=run_dir, verbose=0)
    _check_completed(run_dir, result.metrics, 2, stamp)
    assert (run_dir / "classifier.keras").stat().st_mtime_ns == classifier_stamp
    assert result.metrics["verification"]["auc"] is not None
