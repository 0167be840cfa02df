"""kerasface: face recognition experiments in Keras 3 / TensorFlow.

``import kerasface`` is light: it imports neither Keras nor TensorFlow, so the
``kerasface`` command answers ``--help`` and ``presets`` at once. It still keeps
the promise that after ``import kerasface`` every custom layer, loss, model and optimizer of
the package is registered with Keras, so ``keras.saving.load_model("model.keras")``
works with the default ``safe_mode=True`` and no ``custom_objects``, in either
import order:

* ``kerasface.layers`` / ``losses`` / ``models`` / ``optimizers`` are lazy attributes (PEP 562):
  reading ``kerasface.models`` imports that module.
* The registering modules (:data:`REGISTERING_MODULES`) are imported as soon as
  Keras is there: at once when ``keras`` is already imported (``import keras``
  or ``import tensorflow`` first; TensorFlow imports Keras), otherwise by a
  one-shot import hook (:class:`_RegisterWithKeras`, first in ``sys.meta_path``)
  that runs right after the ``keras`` package has finished executing, whoever
  imports it (``import keras``, ``import tensorflow``, or a kerasface module).
* When Keras is first imported *by* a kerasface module (``import
  kerasface.models``), that module is still half-executed when Keras finishes,
  and importing the registering modules then would meet it half-done. The hook
  therefore also counts the kerasface modules being executed and registers when
  the outermost of them has finished (the hook wraps their loaders too, until
  the registration has run; then it removes itself from ``sys.meta_path``).
"""

from __future__ import annotations

import importlib
import sys
import threading

from kerasface._lazy import lazy_exports

__version__ = "0.1.0"

#: Modules whose import registers kerasface's layers, losses, models and optimizers with Keras.
REGISTERING_MODULES = ("kerasface.layers", "kerasface.losses", "kerasface.models", "kerasface.optimizers")
_LAZY_SUBMODULES = {"layers", "losses", "models", "optimizers"}
#: The everyday calls (deepface's names), imported from :mod:`kerasface.recognition` when first read.
_LAZY_FUNCTIONS = {"verify": "recognition", "represent": "recognition", "find": "recognition"}

__all__ = ["REGISTERING_MODULES", "__version__", "find", "layers", "losses", "models", "optimizers", "represent",
           "verify"]


_lazy_function, _lazy_dir, _ = lazy_exports(__name__, globals(), _LAZY_FUNCTIONS)


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    return _lazy_function(name)


def __dir__():
    return sorted(set(_lazy_dir()) | _LAZY_SUBMODULES)


def _initializing(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _RegisterWithKeras:
    """Import hook: register kerasface with Keras once ``keras`` and every kerasface module in progress are done."""

    def __init__(self):
        self.done = False
        self.depth = 0  # kerasface modules being executed
        self.lock = threading.RLock()

    def ready(self, keras_done: bool = False) -> bool:
        keras_done = keras_done or ("keras" in sys.modules and not _initializing("keras"))
        return keras_done and self.depth == 0

    def register(self, keras_done: bool = False) -> None:
        """Import :data:`REGISTERING_MODULES` if Keras is there and no kerasface module is half-executed."""
        with self.lock:
            if self.done or not self.ready(keras_done):
                return
            self.done = True
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        for name in REGISTERING_MODULES:
            importlib.import_module(name)

    # --- importlib.abc.MetaPathFinder ---
    def find_spec(self, name, path, target=None):
        if self.done or not (name == "keras" or name.startswith(__name__ + ".")):
            return None
        spec = None
        for finder in sys.meta_path:  # the finder that would have found it without this hook
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module
        counted = name != "keras"

        def exec_module(module):
            if counted:
                self.depth += 1
            try:
                execute(module)
            finally:
                if counted:
                    self.depth -= 1
            self.register(keras_done=not counted)  # importlib marks keras done only after this returns

        spec.loader.exec_module = exec_module  # this import's own loader object
        return spec


def _install() -> None:
    hook = _RegisterWithKeras()
    if "keras" in sys.modules and not _initializing("keras"):
        hook.register()
    else:
        sys.meta_path.insert(0, hook)


_install()
