"""Pretrained face models, built on first use from an installed package into a user cache.

- :data:`NAMES`: the pretrained models this package knows (``dlib-resnet-v1``: dlib's ResNet
  face descriptor, 128-d, 150x150 dlib chips, from the ``face-recognition-models`` package, CC0).
- :func:`load`: the Keras model of a pretrained name. The first call reads the weights from
  the installed package (``pip install face-recognition-models``), converts them
  (:mod:`kerasface.pretrained.dlib_resnet`) and saves a ``.keras`` file into the cache
  (:func:`cache_dir`: ``$KERASFACE_HOME`` or ``~/.cache/kerasface``), atomically; later calls
  read the cache. No weights ship with kerasface.
- :func:`resolve`: a pretrained name, a ``.keras`` file, or a training run folder holding
  ``model.keras`` -> the Keras model (what ``kerasface evaluate`` / ``verify`` / ``embed`` take).

The returned models take RGB faces with 0..255 values (uint8 or float) at their input size;
their first layer (:class:`kerasface.layers.FacePreprocessing`) scales them and carries their
:class:`kerasface.face_spec.FaceSpec` (alignment, metric, decision threshold).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from kerasface.face_spec import FaceSpec
from kerasface.io import first_line, save_model
from kerasface.layers import carried_face_spec
from kerasface.pretrained.dlib_resnet import DLIB_RESNET_V1_SPEC, convert_dlib_resnet, dlib_chips
from kerasface.pretrained.locate import INSTALL_HINT, MissingPackageError, face_recognition_models_file

__all__ = ["DLIB_RESNET_V1_SPEC", "INSTALL_HINT", "NAMES", "MissingPackageError", "cache_dir", "cached_path",
           "dlib_chips", "face_spec", "load", "resolve"]

#: name -> (package file it is converted from, converter, the FaceSpec it carries, what it is).
_SOURCES = {
    "dlib-resnet-v1": ("dlib_face_recognition_resnet_model_v1.dat", convert_dlib_resnet, DLIB_RESNET_V1_SPEC,
                       "dlib's ResNet face descriptor (128-d, 150x150 dlib chips; face-recognition-models, CC0)"),
}
#: The pretrained model names :func:`load` knows, with what each is.
NAMES = {name: about for name, (_, _, _, about) in _SOURCES.items()}

#: Bumped when a conversion changes what it writes (weights layout, spec): old cache files are not reused.
CONVERSION_VERSION = 1


def cache_dir() -> Path:
    """``$KERASFACE_HOME`` if set, else ``~/.cache/kerasface``."""
    home = os.environ.get("KERASFACE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "kerasface"


def cached_path(name: str) -> Path:
    """Where :func:`load` keeps the converted ``.keras`` file of ``name``."""
    _check_name(name)
    return cache_dir() / "pretrained" / f"{name}-c{CONVERSION_VERSION}.keras"


def _check_name(name: str) -> None:
    if name not in _SOURCES:
        raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(sorted(_SOURCES))}")


def load(name: str = "dlib-resnet-v1") -> keras.Model:
    """The Keras model of the pretrained ``name`` (built into the cache on first use).

    A cached file whose face spec is not the current one (an older threshold) is rebuilt.
    """
    path = cached_path(name)
    filename, convert, spec, _ = _SOURCES[name]
    if path.is_file():
        model = keras.saving.load_model(path)
        if face_spec(model) == spec:
            return model
    source = face_recognition_models_file(filename)  # MissingPackageError names the install command
    model = convert(source, spec)
    save_model(model, path)
    return model


def resolve(name_or_path) -> keras.Model:
    """A pretrained name (:data:`NAMES`), a ``.keras`` file or a run folder with ``model.keras`` -> the model."""
    text = str(name_or_path)
    if text in _SOURCES:
        return load(text)
    path = Path(text)
    if path.is_dir():
        if not (path / "model.keras").is_file():
            raise FileNotFoundError(f"{text}: a folder without model.keras (not a training run folder)")
        path = path / "model.keras"
    elif not path.is_file():
        raise FileNotFoundError(f"{text}: not a pretrained model name ({', '.join(sorted(_SOURCES))}), "
                                f"a .keras file or a run folder")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors...
        raise ValueError(f"{path}: not a loadable Keras model ({first_line(e) or type(e).__name__})") from None


def face_spec(model: keras.Model) -> FaceSpec | None:
    """The :class:`~kerasface.face_spec.FaceSpec` carried by ``model``'s ``FacePreprocessing`` layer, if any
    (:func:`kerasface.layers.carried_face_spec`)."""
    return carried_face_spec(model)

