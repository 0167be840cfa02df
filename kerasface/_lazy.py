"""Lazy re-exports for package ``__init__`` files (PEP 562).

``__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {"name": "submodule"})``
imports ``package.submodule`` only when ``package.name`` is first read, so light
submodules stay importable without the heavy ones (OpenCV, TensorFlow).
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, namespace: dict, exports: dict):
    """Return ``(__getattr__, __dir__, __all__)`` for ``package`` re-exporting ``exports``."""
    names = sorted(exports)

    def __getattr__(name: str):
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__, names
