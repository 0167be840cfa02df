"""Run folders shared by every training script: naming, per-epoch atomic writes, the result.

A run folder holds ``config.json`` (the resolved preset), ``face_spec.json`` (how its faces
were prepared, :func:`write_face_spec`), ``history.json`` and
``history.csv``, ``curves.png``, the saved model(s) and ``metrics.json``;
everything is rewritten atomically after every epoch
(:mod:`kerasface.io`), so a run cut off by a time limit or a kill still leaves
a loadable model and consistent metrics of its last finished epoch
(``metrics.json`` says ``"complete": false`` until the end).  With a
:class:`~kerasface.training.callbacks.RunBackup` in ``<run>/backup/`` the same
command resumes a killed run (:meth:`RunFolderWriter.resume`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import keras

from kerasface.config import is_setting_default, upgrade_settings
from kerasface.evaluation.plots import plot_history
from kerasface.face_spec import FaceSpec
from kerasface.io import atomic_path, jsonable, save_model, write_json
from kerasface.recognition.spec import FACE_SPEC_NAME, run_face_spec
from kerasface.training.callbacks import RunBackup

logger = logging.getLogger("kerasface.training")

__all__ = ["RunResult", "RunFolderWriter", "new_run_dir", "remove_stale_temporaries", "resume_point",
           "write_face_spec", "write_history_csv"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    model: keras.Model


def new_run_dir(out: str, name: str) -> Path:
    """A new folder ``out/name-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ... when it exists)."""
    base = Path(out)
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the output folder {base}: {e.strerror}") from e
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = base / f"{name}-{stamp}"
    i = 1
    while run_dir.exists():
        i += 1
        run_dir = base / f"{name}-{stamp}-{i}"
    run_dir.mkdir()
    return run_dir


def remove_stale_temporaries(run_dir) -> list[Path]:
    """Delete the ``.name-XXXX.ext`` temporaries a killed run left in ``run_dir`` (and ``run_dir/backup``)."""
    run_dir = Path(run_dir)
    gone = []
    for folder in (run_dir, run_dir / "backup"):
        if folder.is_dir():
            for p in folder.glob(".*-*"):
                if p.is_file():
                    p.unlink()
                    gone.append(p)
    return gone


def _has_finished_epoch(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything of a finished epoch (its history, a model, a backup)."""
    return ((run_dir / "history.json").is_file() or any(run_dir.glob("*.keras"))
            or RunBackup.saved_epoch(run_dir / "backup") > 0)


def resume_point(run_dir: Path, resolved: dict) -> int:
    """Epochs already done in ``run_dir`` by the same settings (0 for a new folder); clear errors otherwise."""
    cfg_file = run_dir / "config.json"
    if not cfg_file.is_file():
        return 0
    # settings renamed since the folder was written are read in today's spelling
    old = upgrade_settings(json.loads(cfg_file.read_text()))
    new = json.loads(json.dumps(jsonable(resolved)))
    diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not (k not in old and is_setting_default(k, new[k]))]
    if diff and not _has_finished_epoch(run_dir):
        # a start that failed before its first epoch (bad data, a wrong flag): nothing to protect
        logger.info("run folder %s holds no finished epoch; replacing its settings (%s)", run_dir, "; ".join(diff))
        return 0
    if diff:
        raise ValueError(f"run folder {run_dir} holds a run with other settings ({'; '.join(diff)}); "
                         f"resume it with the same flags or choose a new --run-dir")
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("complete"):
        raise ValueError(f"run folder {run_dir} already holds a complete run; choose a new --run-dir")
    stale = remove_stale_temporaries(run_dir)
    done = RunBackup.saved_epoch(run_dir / "backup")
    planned = resolved.get("epochs")
    finished = (f"; all {done} epoch(s) are finished: completing the final evaluation and report"
                if isinstance(planned, int) and done >= planned > 0 else "")
    logger.info("resuming %s after %d finished epoch(s)%s%s", run_dir, done,
                f"; removed {len(stale)} temporary file(s) of the killed run" if stale else "", finished)
    return done


def write_face_spec(run_dir, settings: dict, metric: str | None = None,
                    verification: dict | None = None) -> FaceSpec | None:
    """``face_spec.json``: how the run's faces were prepared (crop size, alignment of its data, centre crop,
    kerasface scaling), the metric it verifies with and, once the final evaluation is done (``verification``,
    as in ``metrics.json``), its best-accuracy threshold; ``kerasface verify`` / ``embed`` / ``find`` follow it
    (:func:`kerasface.recognition.spec.run_face_spec`). Settings without an ``image_size`` (not a face
    model) write nothing."""
    if "image_size" not in settings:
        return None
    spec = run_face_spec(settings, verification, metric)
    write_json(Path(run_dir) / FACE_SPEC_NAME, spec.to_dict())
    return spec


def write_history_csv(path, history: Mapping[str, list]) -> None:
    """``history.csv`` as Keras's ``CSVLogger`` writes it (``epoch`` from 0, then the keys sorted), atomically."""
    keys = sorted(history)
    n = max((len(v) for v in history.values()), default=0)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["epoch", *keys])
    for i in range(n):
        row = [i]
        for k in keys:
            v = history[k][i] if i < len(history[k]) else None
            row.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        w.writerow(row)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


class RunFolderWriter(keras.callbacks.Callback):
    """After every epoch: ``history.json``, ``curves.png``, the model file(s) and ``metrics.json``.

    Use it as a Keras callback (``model.fit(..., callbacks=[writer])``: it
    saves ``self.model`` as ``model.keras``) or call :meth:`record` from a loop
    of your own. Args:

    * ``summary``: ``callable(history, epoch_seconds, complete) -> metrics dict``;
    * ``models``: ``{file name: model}`` to save instead of the fitted model
      (e.g. ``{"model.keras": embedder, "triplet.keras": triplet_graph}``);
    * ``plot``: ``callable(history, path)`` drawing ``curves.png``
      (default: :func:`~kerasface.evaluation.plots.plot_history` of accuracy and loss);
    * ``csv``: also write ``history.csv`` (when no ``CSVLogger`` does).
    """

    def __init__(self, run_dir: Path, title: str, summary: Callable, models: Mapping[str, keras.Model] | None = None,
                 plot: Callable | None = None, csv: bool = False, nan_guard=None):
        super().__init__()
        # A tripped kerasface.training.callbacks.StopOnNaN: the epoch is not recorded, the last good files stay.
        self.nan_guard = nan_guard
        self.run_dir = Path(run_dir)
        self.title = title
        self.summary = summary  # callable(history, epoch_seconds, complete) -> metrics dict
        self.models = dict(models) if models is not None else None
        self.plot = plot or (lambda history, path: plot_history(history, path, title=self.title))
        self.csv = csv
        self.history: dict[str, list[float]] = {}
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.tripped:
            return
        self.record(logs, time.perf_counter() - self._t0)

    def resume(self, epochs_done: int) -> None:
        """Continue a killed run: reload ``history.json`` and the epoch times, cut to ``epochs_done`` epochs.

        ``epochs_done`` is the epoch of the training backup, which is written
        after this writer's files, so the history may hold one epoch more
        (redone after the restart) but never less.
        """
        self.history, self.epoch_seconds = {}, []
        if epochs_done <= 0:
            return
        h = self.run_dir / "history.json"
        m = self.run_dir / "metrics.json"
        if h.is_file():
            self.history = {k: [math.nan if v is None else float(v) for v in col[:epochs_done]]
                            for k, col in json.loads(h.read_text()).items()}
        if m.is_file():
            self.epoch_seconds = [float(x) for x in json.loads(m.read_text()).get("epoch_seconds", [])[:epochs_done]]
        n = max((len(c) for c in self.history.values()), default=0)
        if n != epochs_done or len(self.epoch_seconds) != epochs_done:
            raise ValueError(f"{self.run_dir}: the backup is at epoch {epochs_done} but history.json / metrics.json "
                             f"hold {n} / {len(self.epoch_seconds)} epoch(s); cannot resume this run folder")

    def record(self, logs: Mapping | None, seconds: float) -> None:
        """Append one epoch's ``logs`` and rewrite every file of the run folder."""
        self.epoch_seconds.append(float(seconds))
        n = len(self.epoch_seconds)
        for k, v in (logs or {}).items():
            col = self.history.setdefault(k, [])
            col.extend([math.nan] * (n - 1 - len(col)))  # a key first logged in a later epoch
            col.append(float(v))
        write_json(self.run_dir / "history.json", self.history)
        if self.csv:
            write_history_csv(self.run_dir / "history.csv", self.history)
        self.plot(self.history, self.run_dir / "curves.png")
        for filename, model in (self.models or {"model.keras": self.model}).items():
            save_model(model, self.run_dir / filename, include_optimizer=False)  # the backup keeps the optimizer
        write_json(self.run_dir / "metrics.json", self.summary(self.history, self.epoch_seconds, False))
