"""How TensorFlow runs on this machine's CPU: its oneDNN kernels, asked for before TensorFlow is imported.

TensorFlow 2.21's Linux x86 wheels turn their oneDNN CPU kernels on by default only on CPUs with
AVX-512 VNNI / BF16 or AMX; on others (an AVX2-only AMD EPYC here) every convolution, batch norm and
their gradients run TensorFlow's Eigen kernels. Measured on such a machine, quiet (docs/performance.md,
"oneDNN on CPUs without AVX-512"): with oneDNN the VarGFaceNet verifier trains 1.64x and SqNxt-23v5 1.0
1.80x faster, and both infer 1.30x faster. The variable
``TF_ENABLE_ONEDNN_OPTS`` is read once, when TensorFlow is imported, so it has to be set before that.

:func:`prefer_onednn` sets it to ``1`` unless the user has set it (``TF_ENABLE_ONEDNN_OPTS=0`` keeps
Eigen's kernels) or TensorFlow is already imported. The ``kerasface`` command and the ``train_*.py``
scripts call it first; ``import kerasface`` does not (a library does not change how the process's
TensorFlow runs): in your own code, set the variable before importing TensorFlow, or call this first.
oneDNN computes in another order than Eigen, so results differ by float round-off (TensorFlow says
so when it starts); the test suite passes either way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

__all__ = ["ONEDNN_VARIABLE", "onednn_state", "prefer_onednn"]

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn(environ: MutableMapping[str, str] | None = None, *, modules=None) -> str:
    """Ask TensorFlow for its oneDNN CPU kernels; returns what happened.

    ``"set"``: the variable was unset and TensorFlow not imported yet, so it is now ``"1"``;
    ``"user"``: the variable was already set (its value is kept, ``0`` included);
    ``"too late"``: TensorFlow is already imported and decided (nothing is changed).
    ``environ`` and ``modules`` default to ``os.environ`` and ``sys.modules`` (parameters for tests).
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if ONEDNN_VARIABLE in environ:
        return "user"
    if "tensorflow" in modules:
        return "too late"
    environ[ONEDNN_VARIABLE] = "1"
    return "set"


def onednn_state(environ: MutableMapping[str, str] | None = None) -> str:
    """One line for the training log: whether this process asked TensorFlow for oneDNN, and how to change it."""
    environ = os.environ if environ is None else environ
    value = environ.get(ONEDNN_VARIABLE)
    if value is None:
        return f"{ONEDNN_VARIABLE} unset: TensorFlow's own choice for this CPU (on only with AVX-512 VNNI/BF16 or AMX)"
    on = value.strip().lower() in ("1", "true", "yes", "on")
    return f"{ONEDNN_VARIABLE}={value}: oneDNN CPU kernels {'on' if on else 'off'}"
