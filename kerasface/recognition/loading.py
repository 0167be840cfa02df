"""A face model from what a user names: a saved ``.keras`` file, a training run folder, or a pretrained name.

:func:`load_face_model` returns a :class:`FaceModel`: the embedding model (one input, one ``[batch, D]``
output) with the :class:`~kerasface.face_spec.FaceSpec` it follows (:func:`~kerasface.recognition.spec.spec_of`)
and a fingerprint of its weights, which ``embed`` writes next to the embeddings so that ``find`` never
compares embeddings of two different models. Every refusal is one line naming the file and the reason.
"""

from __future__ import annotations

import functools
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from kerasface import pretrained
from kerasface.face_spec import DEFAULT_MODEL, FaceSpec
from kerasface.io import first_line
from kerasface.recognition.spec import FACE_SPEC_NAME, spec_of

__all__ = ["DEFAULT_MODEL", "PRETRAINED_NAMES", "FaceModel", "check_embedding_model", "load_face_model",
           "model_fingerprint", "resolve_model_name"]

#: Names of the pretrained models (built by :mod:`kerasface.pretrained` from an installed package).
PRETRAINED_NAMES = tuple(pretrained.NAMES)


@dataclass(frozen=True)
class FaceModel:
    """An embedding model ready for :func:`kerasface.recognition.represent`: ``model`` (images -> ``[batch, D]``),
    ``spec`` (how it wants its faces), ``name`` (as the user gave it), ``fingerprint`` (of its weights)."""

    model: keras.Model
    spec: FaceSpec
    name: str

    @functools.cached_property
    def fingerprint(self) -> str:
        """:func:`model_fingerprint` of the weights, hashed on first use (only galleries need it)."""
        return model_fingerprint(self.model)

    @property
    def dim(self) -> int:
        return int(self.model.outputs[0].shape[-1])


def model_fingerprint(model: keras.Model) -> str:
    """SHA-256 (first 16 hex digits) of the model's weights, in order: the same weights, the same fingerprint."""
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def check_embedding_model(model: keras.Model, where: str) -> keras.Model:
    """``model`` when it maps one batch of images to one ``[batch, D]`` embedding; ``ValueError`` otherwise."""
    n_in, n_out = len(model.inputs), len(model.outputs)
    if n_in != 1:
        raise ValueError(f"{where}: the model has {n_in} inputs (a Siamese verifier or a triplet graph?), not one "
                         f"embedding per face; give an embedding model (one face in, one [batch, D] embedding out)")
    if n_out != 1:
        raise ValueError(f"{where}: the model has {n_out} outputs, not one embedding")
    shape_in, shape_out = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[-1] != 3:
        raise ValueError(f"{where}: the model takes {shape_in}, not [batch, height, width, 3] images")
    if len(shape_out) != 2 or not shape_out[-1]:
        raise ValueError(f"{where}: the model outputs {shape_out}, not a [batch, D] embedding")
    return model


def _load_keras_file(path: Path) -> keras.Model:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a Keras model (not a .keras archive)")
    try:
        model = keras.saving.load_model(path)  # `import kerasface` registered its layers; safe_mode stays on
    except Exception as e:  # a broken file raises many kinds of errors; all mean "not a model"
        raise ValueError(f"{path}: not a loadable Keras model ({first_line(e, 200) or type(e).__name__})") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"{path}: holds a {type(model).__name__}, not a Keras model")
    return model


def resolve_model_name(name: str) -> keras.Model:
    """The pretrained model called ``name`` (:func:`kerasface.pretrained.load`: built into the user cache on
    first use); an unknown name is refused with the list of known ones."""
    if name not in pretrained.NAMES:
        raise ValueError(f"unknown model name {name!r}: the pretrained models are {', '.join(PRETRAINED_NAMES)}; "
                         f"or give a .keras file or a training run folder with --model")
    return pretrained.load(name)


def load_face_model(model=None) -> FaceModel:
    """``model``: a :class:`FaceModel` (returned as it is), a ``keras.Model``, a path to a ``.keras`` file or a
    run folder (holding ``model.keras``), or a pretrained name (default :data:`DEFAULT_MODEL`)."""
    if isinstance(model, FaceModel):
        return model
    if isinstance(model, keras.Model):
        check_embedding_model(model, f"model {model.name!r}")
        return FaceModel(model, spec_of(model), model.name)
    name = str(model if model is not None else DEFAULT_MODEL)
    key = _cache_key(name)
    cached = _LOADED.get(key)
    if cached is None:
        cached = _load_named(name)
        _LOADED.clear()  # keep the latest model only: models can be large
        _LOADED[key] = cached
    return cached


#: The last model :func:`load_face_model` loaded by name or path, so that ``kerasface.verify(a, b)`` in a loop
#: loads it once (keyed by the name and the files' modification times: a rewritten file is read again).
_LOADED: dict = {}


def _cache_key(name: str) -> tuple:
    path = Path(name).expanduser()
    files = [path / "model.keras", path / FACE_SPEC_NAME, path / "config.json", path / "metrics.json"] \
        if path.is_dir() else [path, path.parent / FACE_SPEC_NAME, path.parent / "config.json"]
    return (str(path.resolve()) if path.exists() else name,
            tuple(f.stat().st_mtime_ns if f.is_file() else None for f in files))


def _load_named(name: str) -> FaceModel:
    path = Path(name).expanduser()
    run_folder = None
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise ValueError(f"{path}: a folder without model.keras (not a training run folder)")
        run_folder, path = path, path / "model.keras"
    elif path.is_file():
        parent = path.parent
        if (parent / FACE_SPEC_NAME).is_file() or (parent / "config.json").is_file():
            run_folder = parent  # a run's model.keras: its run folder says how its faces were prepared
    elif path.suffix or "/" in name or "\\" in name:
        raise FileNotFoundError(f"model not found: {name!r} (a .keras file, a run folder, or one of "
                                f"{', '.join(PRETRAINED_NAMES)})")
    else:
        try:
            net = resolve_model_name(name)
        except ImportError as e:  # a pretrained model's source package is not installed: say how to install it
            raise ValueError(f"model {name!r}: {e}") from None
        check_embedding_model(net, f"model {name!r}")
        return FaceModel(net, spec_of(net), name)
    net = check_embedding_model(_load_keras_file(path), str(path))
    # the absolute path: an embeddings file records it, and `find` reloads the model from anywhere
    where = str((run_folder if run_folder is not None and Path(name).expanduser().is_dir() else path).resolve())
    return FaceModel(net, spec_of(net, run_folder), where)
