"""The one training skeleton every trainer runs; a :class:`Task` supplies what differs.

Read :func:`run_training` top to bottom: it is the whole life of a run.

1. **Run folder**: the task resolves its data into the settings ``config.json``
   records; a new folder is ``<out>/<run_name>-<stamp>``; an existing one
   resumes only with the same settings (the *settings lock*: the stored
   settings, passed through :func:`kerasface.config.upgrade_settings`, must
   equal the new ones; the ``"runtime"`` entry is not compared) and only when
   it is not complete.
2. **Seed, data**: ``keras.utils.set_random_seed(cfg.seed)``, then
   :meth:`Task.prepare` reads the data and writes its files (``data_report.json``, ...).
3. **Runtime**: the model is built and compiled by :meth:`Task.build` inside
   the runtime's dtype policy and strategy scope.
4. **Callbacks**: the task's own (:meth:`Task.callbacks`), verification every
   ``cfg.verify_every`` epochs (:meth:`Task.verification`), the NaN stop
   (:class:`~kerasface.training.callbacks.StopOnNaN`), the run folder writer
   (history, curves, models, ``metrics.json`` through :meth:`Task.summary`, after
   every epoch), the kill-safe backup (:class:`~kerasface.training.callbacks.RunBackup`)
   and, optionally, TensorBoard.
5. **Fit**: Keras's ``fit`` on :meth:`Task.fit_arguments`, or, for an
   :class:`EpochLoopTask` (the triplet trainer's chunked epochs), the task's
   :meth:`~EpochLoopTask.run_epoch` per epoch with the same writer and backup.
6. **Outcome**: a NaN loss stops the run with the last good epoch kept
   (``FloatingPointError``, ``metrics.json`` says where) unless the task
   recovers (:meth:`Task.recover_from_nan`); otherwise the summary, the final
   verification on the task's pairs (``roc.png``, ``cases.png``, ...) and the
   task's report go into ``metrics.json``, and :meth:`Task.result` is returned.

A task, in short::

    class MyTask(Task):
        def settings(self): return self.cfg.to_dict() | {"data": ...}        # before the run folder
        def prepare(self, run_dir, verbose, runtime): ...                      # data, data_report.json
        def build(self, runtime): ...; return compiled_model                  # inside precision + scope
        def fit_arguments(self, first_epoch): return {"x": dataset, "steps_per_epoch": n}
        def summary(self, history, epoch_seconds, complete): return {...}    # metrics.json
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from kerasface.evaluation.plots import plot_history
from kerasface.evaluation.verification import evaluate_pairs, heldout_accuracy, write_report
from kerasface.io import jsonable, write_json
from kerasface.training.callbacks import RunBackup, StopOnNaN, VerificationCallback
from kerasface.training.distribute import Runtime, resume_epochs, worker_run
from kerasface.training.run_folder import RunFolderWriter, RunResult, new_run_dir, write_face_spec

logger = logging.getLogger("kerasface.training")

__all__ = ["Task", "EpochLoopTask", "Verification", "Stop", "Run", "run_training", "open_run_folder"]


@dataclass
class Verification:
    """Pairs a task is verified on: every ``cfg.verify_every`` epochs (Keras-fit tasks) and after training.

    ``model``: the model scored (default: the fitted one); ``prefix``: of the
    history keys; ``heldout_folds``: also the accuracy with thresholds tuned on
    other folds (:func:`~kerasface.evaluation.verification.heldout_accuracy`);
    ``score_kwargs`` go to :func:`~kerasface.evaluation.verification.evaluate_pairs`.
    """

    source: object
    pairs: list
    title: str
    model: keras.Model | None = None
    prefix: str = "verify_"
    heldout_folds: int | None = None
    score_kwargs: dict = field(default_factory=dict)


@dataclass
class Stop:
    """Why training stopped early: ``kind`` ``"nan"`` (a non-finite loss) or ``"collapse"``; ``where``: the
    epoch/step (or chunk) and the loss; ``message``: one line for the user."""

    kind: str
    where: dict
    message: str


@dataclass
class Run:
    """The state of one run the runner hands around: its folder and the per-epoch machinery."""

    run_dir: Path
    runtime: Runtime
    done_epochs: int
    guard: StopOnNaN
    writer: RunFolderWriter
    backup: RunBackup
    fit_seconds: float = 0.0
    settings: dict = field(default_factory=dict)  # what config.json records
    metric: str | None = None  # the embedding metric the run verifies with (face_spec.json)


class Task:
    """What one kind of training supplies to :func:`run_training`. Subclasses set ``self.cfg`` (a preset with
    ``name``, ``out``, ``epochs``, ``seed`` and ``verify_every``) and ``self.title`` (the curves' title), and
    implement :meth:`settings`, :meth:`prepare`, :meth:`build`, :meth:`fit_arguments` and :meth:`summary`."""

    cfg = None
    title = ""
    #: files saved after every epoch (``{name: model}``); None: ``model.keras`` = the fitted model
    models: dict | None = None
    #: how the run's embeddings are compared (``face_spec.json``): ``"cosine"`` or ``"l2"``
    embedding_metric = "cosine"

    def settings(self) -> dict:
        """Resolve the data; the dict ``config.json`` records (and a resumed run must match)."""
        raise NotImplementedError

    def prepare(self, run_dir: Path, verbose, runtime: Runtime) -> None:
        """Read the data and write the task's own files into ``run_dir`` (after ``config.json`` and the seed)."""
        raise NotImplementedError

    def build(self, runtime: Runtime) -> keras.Model:
        """The compiled model to fit (called inside ``runtime.precision()`` and ``runtime.scope()``)."""
        raise NotImplementedError

    def callbacks(self) -> list:
        """The task's own per-epoch callbacks (run before the verification, the NaN stop and the writer)."""
        return []

    def verification(self) -> Verification | None:
        """The pairs to verify on (None or no pairs: no verification)."""
        return None

    def fit_arguments(self, first_epoch: int) -> dict:
        """Keyword arguments of ``model.fit`` besides ``epochs`` and ``callbacks`` (``x``, ``steps_per_epoch``,
        ``validation_data``, ...); ``first_epoch``: the epochs already done (a resumed run)."""
        raise NotImplementedError

    def summary(self, history: dict, epoch_seconds: list, complete: bool) -> dict:
        """``metrics.json`` of the epochs so far; it must hold ``epoch_seconds`` (a resumed run reads them back)."""
        raise NotImplementedError

    def plot(self, history: dict, path) -> None:
        """``curves.png`` (default: accuracy and loss)."""
        plot_history(history, path, title=self.title)

    def stop_fields(self, stop: Stop) -> dict:
        """What ``metrics.json`` says about a NaN stop that ends the run."""
        return {"stopped": dict(stop.where, reason="non-finite loss")}

    def recover_from_nan(self, run: Run) -> bool:
        """After a NaN stop with at least one finished epoch: reload the last good epoch and go on to the
        final report (True), or end the run with ``FloatingPointError`` (False, the default)."""
        return False

    def final_scores(self, model: keras.Model, spec: Verification, run: Run):
        """The final verification's scores (default: :func:`evaluate_pairs` of ``spec``)."""
        return evaluate_pairs(spec.model or model, spec.source, spec.pairs, verbose=0, **spec.score_kwargs)

    def report(self, metrics: dict, model: keras.Model, run: Run) -> dict:
        """The end of a run: add the task's final figures to ``metrics`` (after the verification)."""
        return metrics

    def result(self, run_dir: Path, metrics: dict, model: keras.Model) -> RunResult:
        return RunResult(run_dir=run_dir, metrics=metrics, model=model)

    def close(self) -> None:
        """Release readers and threads (always called once training ends, also on errors)."""


class EpochLoopTask(Task):
    """A task that runs its own epochs (instead of Keras's ``fit`` over ``fit_arguments``): the runner
    still restores the backup, records every epoch in the run folder, backs it up and handles the stops."""

    def begin(self, model: keras.Model) -> None:
        """Before the first epoch (and before a resumed run's backup is restored): start readers, probes."""

    def resumed(self, history: dict) -> None:
        """A resumed run: ``history`` holds the epochs already done."""

    def run_epoch(self, epoch: int, model: keras.Model) -> dict | Stop:
        """Train one epoch; its logs (a :class:`Stop` when the loss became NaN: the epoch is not recorded)."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, logs: dict, seconds: float) -> Stop | None:
        """After the epoch's files and backup are written: a :class:`Stop` ends the run (e.g. a collapse)."""
        return None


# --------------------------------------------------------------------------- the skeleton
def run_training(task: Task, run_dir=None, verbose="auto", runtime: Runtime | None = None,
                 run_name: str | None = None, tensorboard=None) -> RunResult:
    """Train ``task`` end to end in ``run_dir`` (default: a new ``<cfg.out>/<run_name or cfg.name>-<stamp>``).

    ``runtime``: strategy, mixed precision, XLA (default: one device, float32);
    ``tensorboard``: a folder for Keras's TensorBoard logs (Keras-fit tasks).
    """
    runtime = runtime or Runtime()
    with worker_run(runtime, run_dir) as run_dir:  # non-chief workers of a multiworker run: a temporary folder
        return _run(task, run_dir, verbose, runtime, run_name or task.cfg.name, tensorboard)


def _run(task: Task, run_dir, verbose, runtime: Runtime, run_name: str, tensorboard) -> RunResult:
    cfg = task.cfg
    # 1. run folder: new, or the same settings resumed
    settings = task.settings()
    made_here = not run_dir
    run_dir = Path(run_dir) if run_dir else new_run_dir(cfg.out, run_name)
    try:
        done_epochs = open_run_folder(run_dir, settings, runtime)
        # 2. seed and data; face_spec.json (how the faces were prepared: what verify / embed follow)
        keras.utils.set_random_seed(cfg.seed)
        task.prepare(run_dir, verbose, runtime)
        write_face_spec(run_dir, settings, task.embedding_metric)
        # 3. the model, on the runtime
        with runtime.precision(), runtime.scope():
            model = task.build(runtime)
    except Exception:
        if made_here:  # a failed start leaves no junk folder behind (a named --run-dir is replaced by a rerun)
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    # 4. per-epoch machinery: NaN stop, run folder writer, kill-safe backup
    guard = StopOnNaN()
    writer = RunFolderWriter(run_dir, task.title, task.summary, models=task.models, plot=task.plot, csv=True,
                             nan_guard=guard)
    run = Run(run_dir, runtime, done_epochs, guard, writer,
              RunBackup(run_dir / "backup", nan_guard=guard, delete_on_end=False),
              settings=settings, metric=task.embedding_metric)
    # 5. fit
    t0 = time.perf_counter()
    try:
        if isinstance(task, EpochLoopTask):
            stop = _fit_epoch_loop(task, model, run)
        else:
            stop = _fit_keras(task, model, run, verbose, tensorboard)
    finally:
        task.close()
    run.fit_seconds = time.perf_counter() - t0
    # 6. outcome
    return _finish(task, model, run, stop)


def open_run_folder(run_dir: Path, settings: dict, runtime: Runtime) -> int:
    """The settings lock and ``config.json``: epochs already done by a run of the same ``settings`` in
    ``run_dir`` (0: a new run); the folder is created and ``config.json`` written (with the runtime, which
    resuming does not compare: the hardware may change)."""
    done_epochs = resume_epochs(runtime, run_dir, settings)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", settings | {"runtime": runtime.describe()})
    except OSError as e:
        raise OSError(f"cannot write the run folder {run_dir}: {e.strerror or e}") from None
    return done_epochs


def _callbacks(task: Task, run: Run, tensorboard) -> list:
    """The task's callbacks, verification, then (in this order) the NaN stop, the writer and the backup."""
    cfg = task.cfg
    spec = task.verification()
    verify = []
    if spec is not None and spec.pairs and cfg.verify_every > 0:
        # before the writer, so that its keys reach history.csv / history.json
        verify = [VerificationCallback(spec.source, spec.pairs, every=cfg.verify_every, prefix=spec.prefix,
                                       model=spec.model, **spec.score_kwargs)]
    board = [keras.callbacks.TensorBoard(log_dir=str(tensorboard))] if tensorboard else []
    # the backup after the writer: see RunFolderWriter.resume
    return [*task.callbacks(), *verify, run.guard, run.writer, run.backup, *board]


def build_before_tracing(model: keras.Model, data) -> bool:
    """Create the optimizer's, metrics' and loss trackers' variables before ``fit`` traces its first step.

    Without a distribution strategy Keras defers them to the first traced step, and a ``tf.function`` that
    creates variables is traced twice (once to create them, once to run): VarGFaceNet's first training
    step took 102.8-103.7 s against 69.7-81.3 s built beforehand (a loaded machine;
    ``benchmarks/bench_first_step.py``, docs/performance.md). Under a strategy Keras builds them itself
    (its ``_symbolic_build``, which this calls with ``data``'s element spec, a ``tf.data.Dataset``).
    Returns whether it built anything; any other data, or a Keras without that method, is left to Keras
    (the same run, traced twice)."""
    import tensorflow as tf

    symbolic_build = getattr(model, "_symbolic_build", None)
    if (getattr(model, "_distribute_strategy", None) is not None or symbolic_build is None
            or not isinstance(data, tf.data.Dataset)):
        return False
    spec = data.element_spec
    spec = tuple(spec) if isinstance(spec, tuple) else (spec,)
    spec = spec + (None,) * (3 - len(spec))
    symbolic_build(data_batch=spec)
    return True


def _fit_keras(task: Task, model: keras.Model, run: Run, verbose, tensorboard) -> Stop | None:
    """Keras's ``fit``; the backup restores a resumed run in ``on_train_begin``."""
    run.writer.resume(run.done_epochs)
    if run.done_epochs >= task.cfg.epochs:  # every epoch finished, the report did not: the last epoch's model
        run.backup.restore(model)
        return None
    callbacks = _callbacks(task, run, tensorboard)
    fit_arguments = task.fit_arguments(run.done_epochs)
    build_before_tracing(model, fit_arguments.get("x"))
    # shuffle=False: every task's dataset orders itself (seeded per epoch, so a resumed run sees the
    # same batches); Keras's default True would only warn that it ignores it for a tf.data dataset
    model.fit(epochs=task.cfg.epochs, callbacks=callbacks, verbose=verbose, **{"shuffle": False, **fit_arguments})
    if run.guard.tripped:
        return Stop("nan", dict(run.guard.stopped), run.guard.message())
    return None


def _fit_epoch_loop(task: EpochLoopTask, model: keras.Model, run: Run) -> Stop | None:
    """The task's own epochs, each recorded by the writer and then backed up (kill-safe, resumable)."""
    writer, backup = run.writer, run.backup
    writer.set_model(model)
    task.begin(model)
    if run.done_epochs:
        if backup.restore(model) != run.done_epochs:
            raise ValueError(f"{backup.backup_dir}: inconsistent backup; delete it to start over")
        writer.resume(run.done_epochs)
        task.resumed(writer.history)
    for epoch in range(run.done_epochs, task.cfg.epochs):
        t0 = time.perf_counter()
        logs = task.run_epoch(epoch, model)
        if isinstance(logs, Stop):  # never recorded: the weights are NaN
            return logs
        writer.record(logs, time.perf_counter() - t0)
        backup.save(epoch + 1, model)  # after the writer's files: see RunFolderWriter.resume
        stop = task.end_epoch(epoch, logs, writer.epoch_seconds[-1])
        if stop is not None:
            return stop
    return None  # the backup stays until metrics.json says complete (_finish)


def _finish(task: Task, model: keras.Model, run: Run, stop: Stop | None) -> RunResult:
    """NaN epilogue, summary, final verification and report; ``metrics.json`` written last."""
    writer, run_dir = run.writer, run.run_dir
    if stop is not None and stop.kind == "nan" and not (writer.epoch_seconds and task.recover_from_nan(run)):
        _stop_on_nan(task, run, stop)
    if not writer.epoch_seconds:
        raise RuntimeError(f"training ran no epoch; see {run_dir}")
    complete = len(writer.epoch_seconds) == task.cfg.epochs and stop is None
    metrics = writer.summary(writer.history, writer.epoch_seconds, complete)
    spec = task.verification()
    if spec is not None and spec.pairs:
        scores = task.final_scores(model, spec, run)
        if spec.heldout_folds:
            scores.metrics.update(heldout_accuracy(scores.scores, spec.heldout_folds))
        write_report(scores, run_dir, source=spec.source, title=spec.title, metrics_file=None)
        metrics["verification"] = scores.metrics
        write_face_spec(run_dir, run.settings, run.metric, scores.metrics)  # with the run's threshold
    metrics = jsonable(task.report(metrics, model, run))  # what metrics.json holds (NaN/inf as None)
    write_json(run_dir / "metrics.json", metrics)
    if metrics.get("complete"):
        # only now: a kill during the final evaluation or report above leaves the backup, and the same
        # command then completes the report (every epoch done) instead of training again
        run.backup.delete()
    return task.result(run_dir, metrics, model)



def _stop_on_nan(task: Task, run: Run, stop: Stop) -> None:
    """``metrics.json`` of the last good epoch (or of none) with where the loss went NaN; ``FloatingPointError``."""
    writer, run_dir = run.writer, run.run_dir
    if writer.epoch_seconds:
        base = writer.summary(writer.history, writer.epoch_seconds, False)
        where = f": {run_dir}"
    else:
        base = {"preset": task.cfg.name, "complete": False, "epochs_run": 0, "epochs_planned": task.cfg.epochs}
        where = f"; no epoch finished, no model was written ({run_dir})"
    write_json(run_dir / "metrics.json", jsonable(base | task.stop_fields(stop)))
    raise FloatingPointError(stop.message + where)
