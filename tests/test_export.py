"""Exporting a trained kerasface model: SavedModel without kerasface, TFLite, ONNX (docs/export.md).

The model: a small kerasface ResNet (``L2Normalize`` embedding) behind a ``FacePreprocessing``
layer, so that every exported form takes uint8 RGB faces, briefly trained on faces of the
bundled LFW sample, saved to ``.keras`` and loaded back (safe mode) before it is exported.
Each exported form is compared with Keras's own outputs on real faces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import kerasface  # noqa: F401  (registers the layers the saved model uses)
from kerasface.data.images import read_face
from kerasface.data.sources import open_image_source
from kerasface.face_spec import FaceSpec
from kerasface.layers import FacePreprocessing
from kerasface.models import ResNetBasic, SiameseVerifier

# TensorFlow 2.21's tf.lite.Interpreter warns that it moves to the ai_edge_litert package; it still works.
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")

SIZE = 32
DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"
SPEC = FaceSpec(image_size=SIZE, alignment="none", input_scaling="in-model", metric="cosine", threshold=0.42,
                threshold_source="a made-up value for this test")

# Imports of these packages fail in the fresh processes below: what runs there provably does without them.
BLOCK_IMPORTS = """
import sys
class _Refuse:
    def __init__(self, names):
        self.names = names
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, _Refuse(BLOCKED_NAMES))
"""


def fresh_python(code: str, blocked: tuple[str, ...], *args: str) -> subprocess.CompletedProcess:
    script = BLOCK_IMPORTS.replace("BLOCKED_NAMES", repr(set(blocked))) + textwrap.dedent(code)
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd="/")


@pytest.fixture(scope="module")
def faces(sample_dir):
    """uint8 RGB faces of the bundled sample (4 people, 5 images each) and their identity labels."""
    src = open_image_source(sample_dir)
    by_person: dict[str, list[str]] = {}
    for rel in src.list_images():
        by_person.setdefault(src.identity(rel), []).append(rel)
    people = [p for p, rels in sorted(by_person.items()) if len(rels) >= 5][:4]
    assert len(people) == 4, "the bundled sample should have 4 people with 5 images"
    rels = [r for p in people for r in by_person[p][:5]]
    x = np.stack([read_face(src, r, SIZE) for r in rels])
    y = np.repeat(np.arange(len(people)), 5)
    return x, y


@pytest.fixture(scope="module")
def trained(faces, tmp_path_factory):
    """``(model loaded back from .keras, its path, Keras's outputs on the faces)``."""
    x, y = faces
    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="face")
    pixels = FacePreprocessing(spec=SPEC.to_dict(), name="preprocess")(image)
    backbone = ResNetBasic(blocks=(1, 1), widths=(8, 16), input_shape=(SIZE, SIZE, 3), stem_channels=8,
                           embedding_dim=16, l2_normalize=True, name="tiny_resnet")
    embedder = keras.Model(image, backbone(pixels), name="embedder")
    classifier = keras.Sequential([embedder, keras.layers.Dense(int(y.max()) + 1, name="logits")])
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = embedder.predict(x, verbose=0)
    classifier.fit(x, y, batch_size=5, epochs=3, verbose=0)
    assert np.abs(embedder.predict(x, verbose=0) - before).max() > 1e-3  # it did train
    path = tmp_path_factory.mktemp("export") / "embedder.keras"
    embedder.save(path)
    model = keras.saving.load_model(path)  # safe_mode on, layers registered by `import kerasface`
    return model, path, np.asarray(model.predict(x, verbose=0))


@pytest.fixture(scope="module")
def saved_model(trained):
    model, path, _ = trained
    out = path.parent / "embedder_savedmodel"
    model.export(out, verbose=False)
    return out


SAVEDMODEL_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf

served = tf.saved_model.load(sys.argv[1])
faces = np.load(sys.argv[2])
signature = served.signatures["serving_default"]
(spec,) = signature.structured_input_signature[1].values()
assert spec.dtype == tf.uint8 and tuple(spec.shape) == (None, 32, 32, 3), spec
np.save(sys.argv[3], served.serve(faces).numpy())
np.save(sys.argv[4], list(signature(tf.constant(faces)).values())[0].numpy())
assert not [m for m in sys.modules if m.split(".")[0] == "kerasface"]
print("kerasface imported:", any(m.startswith("kerasface") for m in sys.modules))
"""


def test_savedmodel_loads_with_plain_tensorflow_and_matches_keras(trained, saved_model, faces, tmp_path):
    _, _, expected = trained
    np.save(tmp_path / "faces.npy", faces[0])  # uint8 pixels, straight from the decoder
    p = fresh_python(SAVEDMODEL_SCRIPT, ("kerasface",), str(saved_model), str(tmp_path / "faces.npy"),
                     str(tmp_path / "serve.npy"), str(tmp_path / "signature.npy"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "kerasface imported: False" in p.stdout
    for name in ("serve.npy", "signature.npy"):
        np.testing.assert_allclose(np.load(tmp_path / name), expected, atol=1e-5)


def test_the_blocker_does_block_kerasface():
    """The fresh process above could not have used kerasface: importing it there fails."""
    p = fresh_python("import kerasface", ("kerasface",))
    assert p.returncode != 0 and "kerasface is blocked in this process" in p.stderr


def test_tflite_from_savedmodel_matches_keras(trained, saved_model, faces):
    _, _, expected = trained
    interpreter = tf.lite.Interpreter(
        model_content=tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert())
    (detail,) = interpreter.get_input_details()
    assert detail["dtype"] == np.uint8 and detail["name"] == "serving_default_face:0"
    runner = interpreter.get_signature_runner("serving_default")
    (got,) = runner(face=faces[0]).values()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_tflite_verifier_inputs_matched_by_name(trained, faces, tmp_path):
    """A two-input model's TFLite inputs need not come in the Keras order: match them by name.

    The verifier here is asymmetric (a dense layer over the two embeddings side by side), so
    feeding the faces the wrong way round changes the answer and the test can tell.
    """
    model, _, _ = trained
    x = faces[0]
    a, b = x[:10], x[10:]
    face_a = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="face_a")
    face_b = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="face_b")
    joined = keras.layers.Concatenate(name="pair")([model(face_a), model(face_b)])
    asym = keras.Model([face_a, face_b], keras.layers.Dense(2, name="head")(joined), name="asym_verifier")
    siamese = SiameseVerifier(model, hidden_units=8)  # the kerasface verifier (symmetric in its faces)
    for verifier in (asym, siamese):
        expected = verifier.predict([a, b], verbose=0)
        dtype = np.dtype(verifier.inputs[0].dtype)
        verifier.export(tmp_path / verifier.name, verbose=False)
        interpreter = tf.lite.Interpreter(
            model_content=tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / verifier.name)).convert())
        # 1. the signature runner takes the inputs by name
        (got,) = interpreter.get_signature_runner("serving_default")(face_a=a.astype(dtype),
                                                                       face_b=b.astype(dtype)).values()
        np.testing.assert_allclose(got, expected, atol=1e-4)
        # 2. the plain interpreter: index of each input found from its name
        details = interpreter.get_input_details()
        index = {re.search(r"face_[ab]", d["name"]).group(): d["index"] for d in details}
        for d in details:
            interpreter.resize_tensor_input(d["index"], a.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index["face_a"], a.astype(dtype))
        interpreter.set_tensor(index["face_b"], b.astype(dtype))
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]),
                                   expected, atol=1e-4)
    # the asymmetric verifier swapped: a different answer, so matching by name is what made it right
    swapped = asym.predict([b, a], verbose=0)
    assert np.abs(swapped - asym.predict([a, b], verbose=0)).max() > 1e-3


def test_onnx_through_tf2onnx_matches_keras(trained, faces):
    tf2onnx = pytest.importorskip("tf2onnx", reason="tf2onnx is an optional test extra (pip install tf2onnx)")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is an optional test extra "
                                                    "(pip install onnxruntime)")
    model, _, expected = trained
    signature = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.uint8, name="face"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "face" and inp.type == "tensor(uint8)"
    (got,) = session.run(None, {"face": faces[0]})
    np.testing.assert_allclose(got, expected, atol=1e-4)


def _doc_function(name: str) -> str:
    """The ```python block of docs/export.md that defines ``name``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if f"def {name}(" in b]
    assert len(found) == 1, f"docs/export.md should define {name} once"
    return found[0]


def test_face_spec_read_from_keras_file_without_tensorflow(trained):
    """The doc's ``read_face_spec`` runs where TensorFlow, Keras, NumPy and kerasface cannot even be imported."""
    _, path, _ = trained
    code = _doc_function("read_face_spec") + "\nimport json, sys\nprint(json.dumps(read_face_spec(sys.argv[1])))\n"
    p = fresh_python(code, ("tensorflow", "keras", "numpy", "kerasface"), str(path))
    assert p.returncode == 0, p.stderr[-3000:]
    assert FaceSpec.from_dict(json.loads(p.stdout)) == SPEC
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(path.parent / "plain.keras")
    p = fresh_python(code, ("tensorflow", "keras", "numpy", "kerasface"), str(path.parent / "plain.keras"))
    assert p.returncode == 0 and json.loads(p.stdout) is None
