"""Shared fixtures: the bundled LFW sample (always present) and the full shared LFW (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_LFW = SHARED / "lfw"
SAMPLE = REPO / "data" / "lfw_sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """``data/lfw_sample``: ``lfw/<Name>/...`` images plus ``pairsTrain.txt`` / ``pairsVal.txt``."""
    assert (SAMPLE / "lfw").is_dir(), f"bundled sample missing: {SAMPLE} (run data/make_sample.py)"
    return SAMPLE


@pytest.fixture(scope="session")
def shared_lfw() -> Path:
    """The full shared LFW folder (``lfw.zip`` and the official lists); skips when absent."""
    if not (SHARED_LFW / "lfw.zip").is_file():
        pytest.skip(f"full LFW not available at {SHARED_LFW}")
    return SHARED_LFW


# --- fresh-process model loading (tests/models/test_siamese.py, tests/training/) ---------------

_FRESH_PROCESS_SCRIPT = r"""
import json, sys
import kerasface, keras, numpy

def implementations(model, found):
    for layer in model.layers:
        if hasattr(layer, "layers"):
            implementations(layer, found)
        if hasattr(layer, "implementation"):
            found.add(layer.implementation)
    return found

for job in json.loads(sys.argv[1]):
    model = keras.saving.load_model(job["model"])
    inputs = [numpy.load(p) for p in job["inputs"]]
    pred = keras.ops.convert_to_numpy(model(inputs, training=False))
    numpy.save(job["out"], pred)
    with open(job["info"], "w") as f:
        json.dump({"class": type(model).__name__, "name": model.name,
                   "implementations": sorted(implementations(model, set())),
                   "n_weights": len(model.weights)}, f)
"""


@pytest.fixture(scope="session")
def fresh_process_predict(tmp_path_factory):
    """``run([(model_path, [input arrays]), ...]) -> [(prediction, info), ...]``.

    Every model is loaded in ONE new Python process that only imports
    ``kerasface``, ``keras`` and ``numpy`` and calls ``keras.saving.load_model``
    with the default ``safe_mode`` and no ``custom_objects``; it predicts in
    inference mode on the given inputs (saved as ``.npy``). ``info`` has the
    loaded model's class, name, number of weights and the sorted set of
    ``implementation`` values of its (nested) layers.
    """
    import json
    import subprocess
    import sys

    import numpy as np

    def run(jobs):
        work = tmp_path_factory.mktemp("fresh")
        spec = []
        for j, (model_path, inputs) in enumerate(jobs):
            paths = []
            for i, arr in enumerate(inputs):
                p = work / f"job{j}_in{i}.npy"
                np.save(p, np.asarray(arr))
                paths.append(str(p))
            spec.append({"model": str(model_path), "inputs": paths,
                         "out": str(work / f"job{j}_out.npy"), "info": str(work / f"job{j}_info.json")})
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        proc = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_SCRIPT, json.dumps(spec)],
                              cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"fresh process failed:\n{proc.stderr[-4000:]}"
        return [(np.load(s["out"]), json.loads(Path(s["info"]).read_text())) for s in spec]

    return run
