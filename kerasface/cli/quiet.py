"""Logging set-up and TensorFlow's start-up noise: silenced unless ``--verbose``.

TensorFlow prints C++ log lines when it is imported and when it first looks for
devices (``cudart_stub``, ``cpu_feature_guard``, ``cuInit``, absl's "All log
messages before absl::InitializeLog()"), some of them whatever
``TF_CPP_MIN_LOG_LEVEL`` says. :func:`import_tensorflow` sets that variable and
imports TensorFlow with the process's stderr (file descriptor 2) sent to a
temporary file, then writes back every line that is not such a log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

__all__ = ["configure_logging", "import_tensorflow"]

_TF_LOG_LINE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                          rb"STDERR|[IWEF]\d{4} [\d:. ]+ +\d+ [\w./-]+:\d+\] |To enable the following instructions)")


def configure_logging(verbose: bool) -> None:
    """INFO lines of kerasface (DEBUG with ``--verbose``); TensorFlow's C++ logs only with ``--verbose``."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("kerasface").setLevel(logging.DEBUG)


@contextlib.contextmanager
def _tensorflow_lines_dropped():
    """Send fd 2 to a temporary file; afterwards write back the lines that are not TensorFlow log lines."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(AttributeError, ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp if not _TF_LOG_LINE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def import_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow (and let it find its devices) before a command needs it, quietly unless ``verbose``."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        import tensorflow  # noqa: F401
        return
    with _tensorflow_lines_dropped():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
