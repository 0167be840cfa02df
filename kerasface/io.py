"""Atomic file writes (a killed run never leaves a half-written file behind), saving and loading models, and
:func:`first_line`, the one line of an error's text that a one-line message quotes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_path", "first_line", "jsonable", "load_model", "write_json", "save_model", "save_figure"]


def first_line(text, limit: int | None = None) -> str:
    """The first line of ``str(text)`` (an error's message, say), stripped and cut to ``limit`` characters;
    ``""`` when it is empty."""
    line = (str(text).strip().splitlines() or [""])[0]
    return line if limit is None else line[:limit]


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented strict JSON (NaN/inf -> null, numpy scalars/arrays -> numbers), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=False, default=_jsonable, allow_nan=False) + "\n")


def save_figure(fig, path, dpi=None) -> str:
    """Lay out a matplotlib figure and write it as PNG through a temporary file; returns the path."""
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return os.fspath(path)


def jsonable(o):
    """A copy of ``o`` fit for strict JSON: NaN and infinities become ``None``, numpy values plain numbers."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    try:
        import numpy as np

        if isinstance(o, np.floating):
            return jsonable(float(o))
        if isinstance(o, np.ndarray):
            return jsonable(o.tolist())
    except ImportError:  # pragma: no cover
        pass
    return o


def save_model(model, path, include_optimizer: bool = True) -> None:
    """``model.save(path)`` through a temporary file (Keras needs the ``.keras`` suffix).

    ``include_optimizer=False`` writes the model for inference: no optimizer state and no compile
    settings (Keras 3's ``model.save`` has no such switch; the model is saved with its optimizer
    detached for the moment of the write). The file loads uncompiled and is about a third the size
    with Adam's two moments per weight. The run folder's ``model.keras`` is written this way; its
    kill-safe ``backup/`` keeps the optimizer for resuming.
    """
    with atomic_path(path, suffix=".keras") as tmp:
        if include_optimizer or not getattr(model, "compiled", False):
            model.save(tmp)
            return
        optimizer, compiled = model.optimizer, model.compiled
        model.optimizer, model.compiled = None, False
        try:
            model.save(tmp)
        finally:
            model.optimizer, model.compiled = optimizer, compiled


def load_model(path, **kwargs):
    """``keras.saving.load_model(path, **kwargs)`` (safe mode on) with errors a user can read.

    ``FileNotFoundError`` only when there is no such file; any failure to load a file that exists
    (not a zip, a tampered config, a layer no imported package registered, ...) is a ``ValueError``
    naming the file, the original error type and its first line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model not found: {str(path)!r}" + (" (it is a folder)" if path.is_dir() else ""))
    import zipfile

    import keras

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(f"cannot load the model {str(path)!r}: the file exists but is not a .keras zip archive "
                         f"(corrupt or truncated, {path.stat().st_size} bytes)")
    try:
        return keras.saving.load_model(path, **kwargs)
    except Exception as e:
        raise ValueError(f"cannot load the model {str(path)!r}: {type(e).__name__}: {first_line(e, 300)}") from e


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
