"""kerasface.training.runner: the one skeleton, driven by toy tasks (a Dense layer on 32 random rows).

Every trainer runs through these code paths: the settings lock (through
``kerasface.config.upgrade_settings``), the NaN stop with the last good epoch
kept, resuming after a crash between an epoch's files and its backup, and the
summary in ``metrics.json``, both for Keras-fit tasks and for tasks with their
own epoch loop (the triplet trainer's kind).
"""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.training import run_folder
from kerasface.training.callbacks import RunBackup
from kerasface.training.runner import EpochLoopTask, Stop, Task, run_training

EPOCHS = 3
STEPS = 4  # 32 rows, batch 8


@keras.saving.register_keras_serializable(package="kerasface_tests_runner")
class NaNFrom(keras.optimizers.schedules.LearningRateSchedule):
    """0.01, then NaN from optimizer step ``step`` on."""

    def __init__(self, step):
        self.step = step

    def __call__(self, step):
        return keras.ops.where(step < self.step, 0.01, float("nan"))

    def get_config(self):
        return {"step": self.step}


class ToyTask(Task):
    def __init__(self, tmp_path, nan_step=10**9, epochs=EPOCHS, lr_name="lr"):
        self.cfg = SimpleNamespace(name="toy", out=str(tmp_path / "runs"), epochs=epochs, seed=0, verify_every=0)
        self.title = "toy"
        self.nan_step, self.lr_name = nan_step, lr_name
        self.closed = 0

    def settings(self):
        return {"name": "toy", "epochs": self.cfg.epochs, self.lr_name: 0.01}

    def prepare(self, run_dir, verbose, runtime):
        rng = np.random.default_rng(0)
        self.x = rng.normal(size=(32, 4)).astype("float32")
        self.y = self.x.sum(axis=1, keepdims=True)
        (run_dir / "data_report.json").write_text("{}")

    def build(self, runtime):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="toy")
        model.compile(optimizer=keras.optimizers.SGD(NaNFrom(self.nan_step)), loss="mse")
        return model

    def fit_arguments(self, first_epoch):
        # a tf.data dataset, as every real task gives (Keras warns if it is also asked to shuffle one)
        return {"x": tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(8)}

    def plot(self, history, path):
        path.write_text("curves")

    def summary(self, history, epoch_seconds, complete):
        return {"preset": "toy", "complete": complete, "epochs_run": len(epoch_seconds),
                "epochs_planned": self.cfg.epochs, "final_loss": history["loss"][-1], "epoch_seconds": epoch_seconds}

    def close(self):
        self.closed += 1


class ToyLoopTask(ToyTask, EpochLoopTask):
    """The same data trained by the task's own epochs: ``fit`` one epoch at a time, NaN reported as a Stop."""

    def __init__(self, tmp_path, nan_epoch=None, **kw):
        super().__init__(tmp_path, **kw)
        self.nan_epoch = nan_epoch
        self.began = self.resumed_with = None

    def begin(self, model):
        self.began = True

    def resumed(self, history):
        self.resumed_with = len(history["loss"])

    def run_epoch(self, epoch, model):
        if epoch == self.nan_epoch:
            return Stop("nan", {"epoch": epoch + 1, "loss": float("nan")}, f"the loss became nan at epoch {epoch + 1}")
        h = model.fit(self.x, self.y, batch_size=8, epochs=1, verbose=0, shuffle=False).history
        return {"loss": h["loss"][0]}


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("kind", ["fit", "loop"])
def test_complete_run_writes_one_run_folder(tmp_path, kind):
    task = ToyTask(tmp_path) if kind == "fit" else ToyLoopTask(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_training(task, verbose=0, run_name="toy-named")
    # the dataset orders itself: Keras is not asked to shuffle it (it would warn that it ignores that)
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]
    run_dir = result.run_dir
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("toy-named-")
    m = _metrics(run_dir)
    assert m == result.metrics and m["complete"] is True and m["epochs_run"] == EPOCHS
    assert json.loads((run_dir / "config.json").read_text())["runtime"]["strategy"] == "default"
    for name in ("history.json", "history.csv", "curves.png", "model.keras", "data_report.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists() and task.closed == 1
    assert int(result.model.optimizer.iterations) == EPOCHS * STEPS
    with pytest.raises(ValueError, match="already holds a complete run"):
        run_training(type(task)(tmp_path), run_dir=run_dir, verbose=0)


@pytest.mark.parametrize("kind", ["fit", "loop"])
def test_nan_stops_and_keeps_the_last_good_epoch(tmp_path, kind):
    run_dir = tmp_path / "run"
    task = ToyTask(tmp_path, nan_step=STEPS + 2) if kind == "fit" else ToyLoopTask(tmp_path, nan_epoch=1)
    with pytest.raises(FloatingPointError, match="epoch 2") as stopped:
        run_training(task, run_dir=run_dir, verbose=0)
    if kind == "fit":
        assert "the run folder keeps the model of epoch 1" in str(stopped.value)
    m = _metrics(run_dir)
    assert m["complete"] is False and m["epochs_run"] == 1 and m["stopped"]["epoch"] == 2
    assert m["stopped"]["reason"] == "non-finite loss" and task.closed == 1
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 1
    assert json.loads((run_dir / "backup" / RunBackup.STATE).read_text())["epoch"] == 1
    saved = keras.saving.load_model(run_dir / "model.keras", compile=False)
    assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in saved.weights)


@pytest.mark.parametrize("kind", ["fit", "loop"])
def test_nan_in_the_first_epoch_leaves_no_model(tmp_path, kind):
    run_dir = tmp_path / "run"
    task = ToyTask(tmp_path, nan_step=2) if kind == "fit" else ToyLoopTask(tmp_path, nan_epoch=0)
    with pytest.raises(FloatingPointError, match="no epoch finished, no model was written") as stopped:
        run_training(task, run_dir=run_dir, verbose=0)
    assert "keeps" not in str(stopped.value)  # no "keeps the model of the last finished epoch" when none exists
    m = _metrics(run_dir)
    assert m["complete"] is False and m["epochs_run"] == 0 and m["stopped"]["epoch"] == 1
    assert not (run_dir / "model.keras").exists()


class _Crash(Exception):
    pass


@pytest.mark.parametrize("kind", ["fit", "loop"])
def test_crash_before_the_backup_then_the_same_call_resumes(tmp_path, monkeypatch, kind):
    make = ToyTask if kind == "fit" else ToyLoopTask
    run_dir = tmp_path / "run"
    real = RunBackup.save

    def crash(self, epochs_done, model=None):
        if epochs_done == 2:  # epoch 2's files are written, its backup never is
            raise _Crash
        real(self, epochs_done, model)

    monkeypatch.setattr(RunBackup, "save", crash)
    with pytest.raises(_Crash):
        run_training(make(tmp_path), run_dir=run_dir, verbose=0)
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 2
    monkeypatch.setattr(RunBackup, "save", real)
    task = make(tmp_path)
    result = run_training(task, run_dir=run_dir, verbose=0)
    assert result.metrics["complete"] is True and result.metrics["epochs_run"] == EPOCHS
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == EPOCHS
    assert int(result.model.optimizer.iterations) == EPOCHS * STEPS
    if kind == "loop":
        assert task.began and task.resumed_with == 1


def test_settings_lock_reads_old_settings_through_upgrade_settings(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(RunBackup, "save", lambda self, n, model=None: (_ for _ in ()).throw(_Crash()))
    with pytest.raises(_Crash):
        run_training(ToyTask(tmp_path, lr_name="old_lr"), run_dir=run_dir, verbose=0)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"other settings \(lr: None -> 0.01; old_lr: 0.01 -> None\)"):
        run_training(ToyTask(tmp_path), run_dir=run_dir, verbose=0)
    # a renamed setting, mapped by the upgrade hook: the old run folder resumes
    monkeypatch.setattr(run_folder, "upgrade_settings",
                        lambda s: {("lr" if k == "old_lr" else k): v for k, v in s.items()})
    result = run_training(ToyTask(tmp_path), run_dir=run_dir, verbose=0)
    assert result.metrics["complete"] is True


# --- one trace of the first training step ---------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kerasface_tests_runner")
class CountTraces(keras.layers.Layer):
    """Identity that counts the graph traces of its call."""

    traces = 0

    def call(self, x):
        if not isinstance(x, keras.KerasTensor):
            CountTraces.traces += 1
        return x


def _traces_of_fit(prebuild: bool) -> tuple[int, bool]:
    from kerasface.training.runner import build_before_tracing

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(CountTraces()(x)))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices((rng.normal(size=(16, 4)).astype("float32"),
                                               rng.integers(0, 2, 16))).batch(8)
    built = build_before_tracing(model, data) if prebuild else False
    assert model.optimizer.built is built  # built here, or left to the traced step
    CountTraces.traces = 0  # (the symbolic build runs the layers in a scratch graph of its own)
    model.fit(data, epochs=2, verbose=0)
    return CountTraces.traces, model.optimizer.built


def test_variables_built_before_fit_trace_the_first_step_once():
    """Keras creates the optimizer's and metrics' variables inside the first traced step unless they exist;
    a tf.function that creates variables is traced twice. build_before_tracing makes it once."""
    assert _traces_of_fit(prebuild=False) == (2, True)
    assert _traces_of_fit(prebuild=True) == (1, True)
    # not a dataset (or under a strategy, where Keras builds them itself): left to Keras
    from kerasface.training.runner import build_before_tracing

    assert build_before_tracing(keras.Sequential([keras.layers.Dense(1)]), np.zeros((2, 2))) is False
