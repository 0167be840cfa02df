"""``import kerasface`` is light, yet registers every custom layer/loss/model with Keras in any import order.

Every check runs in a fresh Python process (the test process has long imported Keras).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SAVE = """
import keras
from kerasface.layers import L2Normalize
x = keras.Input((4,))
model = keras.Model(x, L2Normalize(name="unit")(keras.layers.Dense(3, name="dense")(x)))
model.save(PATH)
"""

# the names every kerasface module that registers objects with Keras gives them (a layer, a loss, a model)
_CHECK = """
import numpy as np
import keras as K
model = LOAD(PATH)  # default safe_mode, no custom_objects
assert type(model.get_layer("unit")).__name__ == "L2Normalize"
out = np.asarray(model(np.ones((2, 4), "float32")))
assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5), out
registered = set(K.saving.get_custom_objects())
for name in ("kerasface>L2Normalize", "kerasface>AngularPrototypicalLoss", "kerasface>MarginHead"):
    assert name in registered, (name, sorted(n for n in registered if n.startswith("kerasface")))
print("OK")
"""


def _python(code: str, path=None, timeout=600) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    code = f"PATH = {str(path)!r}\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_import_kerasface_loads_neither_keras_nor_tensorflow():
    p = _python("""
        import sys
        import kerasface, kerasface.config, kerasface.presets, kerasface.cli
        heavy = sorted(m for m in ("keras", "tensorflow", "cv2", "matplotlib") if m in sys.modules)
        print(heavy)
        """)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("lazy") / "unit.keras"
    p = _python(_SAVE, path)
    assert p.returncode == 0, p.stderr[-3000:]
    return path


@pytest.mark.parametrize("imports", [
    "import kerasface\nimport keras\nLOAD = keras.saving.load_model",  # (b) kerasface first: the hook registers
    "import keras\nimport kerasface\nLOAD = keras.saving.load_model",  # (c) keras first: registered at once
    # (d) tensorflow first; the model loaded with tf.keras, then with keras
    "import tensorflow as tf\nimport kerasface\n"
    "LOAD = lambda p: tf.keras.models.load_model(p) and __import__('keras').saving.load_model(p)",
    # tensorflow imports keras inside its own import, after kerasface installed the hook
    "import kerasface\nimport tensorflow as tf\nLOAD = tf.keras.models.load_model",
    "import kerasface.models\nimport keras\nLOAD = keras.saving.load_model",  # keras imported by a kerasface module
])
def test_load_model_after_import_kerasface(saved_model, imports):
    p = _python(imports + "\n" + _CHECK, saved_model)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]


def test_lazy_submodules_are_attributes():
    p = _python("""
        import sys
        import kerasface
        assert "layers" in dir(kerasface) and "kerasface.models" not in sys.modules
        assert kerasface.models.SiameseVerifier.__name__ == "SiameseVerifier"
        try:
            kerasface.nothing
        except AttributeError:
            print("OK")
        """)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
