"""The ``kerasface`` command line: one module per command, flags generated from the settings schema.

=====================  =====================================================================
module                 role
=====================  =====================================================================
``main``               parser assembly, dispatch, logging, errors -> exit status (:func:`main`)
``flags``              argparse flags generated from :mod:`kerasface.config`; runtime flags
``exit_codes``         the exit statuses, in one place
``quiet``              logging set-up; TensorFlow imported without its start-up lines
``train``              ``train`` / ``train-triplet`` / ``train-classify``
``evaluate``, ...      ``evaluate``, ``presets``, ``summary``, ``lowlight-grid``, ``align``, ``pack``
=====================  =====================================================================

``from kerasface.cli import main`` is the function (the console script ``kerasface``,
``python -m kerasface``, ``python -m kerasface.cli``); the module of that name is
``sys.modules["kerasface.cli.main"]``. Nothing here imports Keras or TensorFlow until a
command runs.
"""

from kerasface.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
