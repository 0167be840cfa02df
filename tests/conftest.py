"""Shared fixtures: the bundled LFW sample (always present), the full shared LFW and the detection samples
(optional), and the tiny face models of the recognition tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# the kernels the kerasface command runs (kerasface.runtime): TensorFlow's oneDNN, on CPUs without AVX-512 too;
# TF_ENABLE_ONEDNN_OPTS=0 python3 -m pytest runs the suite on Eigen's kernels
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_LFW = SHARED / "lfw"
SAMPLE = REPO / "data" / "lfw_sample"
DETECTION = SHARED / "detection_samples"
#: the face side of :func:`dense_face_model` (tests/test_recognition.py and tests/test_cli_recognition.py: SIZE)
FACE_SIZE = 32


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


@pytest.fixture(scope="session")
def detection_samples() -> Path:
    """``../shared/data/detection_samples``: photos with no face, six faces, a crowd; skips when absent."""
    if not all((DETECTION / n).is_file() for n in ("multiface.jpg", "no-faces.jpg")):
        pytest.skip(f"detection samples not available at {DETECTION}")
    return DETECTION


@pytest.fixture(scope="session")
def dense_face_model():
    """``build(preprocessing=None, seed=0)``: Flatten -> Dense(8) on 32x32x3 faces, a model whose embeddings a
    test recomputes in NumPy; with ``preprocessing`` (a FaceSpec's dict), a FacePreprocessing layer first."""
    import keras

    from kerasface.layers import FacePreprocessing

    def build(preprocessing: dict | None = None, seed: int = 0) -> keras.Model:
        x = inp = keras.Input((FACE_SIZE, FACE_SIZE, 3))
        if preprocessing is not None:
            x = FacePreprocessing(spec=preprocessing)(x)
        dense = keras.layers.Dense(8, kernel_initializer=keras.initializers.GlorotNormal(seed))
        return keras.Model(inp, dense(keras.layers.Flatten()(x)))

    return build


@pytest.fixture(scope="session")
def mtcnn_face_model(tmp_path_factory, dense_face_model) -> Path:
    """A saved :func:`dense_face_model` whose FaceSpec detects and aligns faces with MTCNN (scaling in the model,
    cosine threshold 0.5)."""
    from kerasface.face_spec import FaceSpec

    spec = FaceSpec(FACE_SIZE, alignment="mtcnn", input_scaling="in-model", threshold=0.5, threshold_source="test")
    path = tmp_path_factory.mktemp("mtcnn_face_model") / "mtcnn.keras"
    dense_face_model(spec.to_dict()).save(path)
    return path


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
