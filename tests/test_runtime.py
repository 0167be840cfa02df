"""kerasface.runtime: the kerasface command asks TensorFlow for its oneDNN CPU kernels unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kerasface.runtime import ONEDNN_VARIABLE, onednn_state, prefer_onednn

REPO = str(Path(__file__).resolve().parents[1])


def test_prefer_onednn_sets_the_variable_before_tensorflow():
    env = {}
    assert prefer_onednn(env, modules={}) == "set"
    assert env == {ONEDNN_VARIABLE: "1"}
    assert "oneDNN CPU kernels on" in onednn_state(env)


def test_prefer_onednn_keeps_the_users_choice():
    env = {ONEDNN_VARIABLE: "0"}
    assert prefer_onednn(env, modules={}) == "user"
    assert env == {ONEDNN_VARIABLE: "0"}
    assert "oneDNN CPU kernels off" in onednn_state(env)


def test_prefer_onednn_changes_nothing_once_tensorflow_is_imported():
    env = {}
    assert prefer_onednn(env, modules={"tensorflow": object()}) == "too late"
    assert env == {}
    assert "unset" in onednn_state(env)


def _tensorflow_onednn_after_main(env_value: str | None) -> str:
    """In a fresh process: the kerasface command's main (a command that does not import TensorFlow itself),
    then TensorFlow's own answer to whether its oneDNN kernels are on."""
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_VARIABLE}
    if env_value is not None:
        env[ONEDNN_VARIABLE] = env_value
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")])))
    code = ("import contextlib, io\n"
            "from kerasface.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['presets']) == 0\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


def test_kerasface_command_turns_onednn_on_and_zero_keeps_it_off():
    # TensorFlow itself reports the kernels it will use: on after the command's start-up, whatever this CPU's
    # default (off without AVX-512 VNNI/BF16 or AMX), and off when the user said 0
    assert _tensorflow_onednn_after_main(None) == "True"
    assert _tensorflow_onednn_after_main("0") == "False"
