"""Untrusted model files: a .keras with Python code (Lambda) is refused; kerasface models contain none.

Every registered backbone's config is checked for Lambda layers in test_backbones.py.
"""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest

import kerasface  # noqa: F401  (registers the kerasface layers)
from kerasface.models import SiameseVerifier, TripletModel, build_backbone, get_embedding_model


def _saved_config(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("config.json"))


def test_lambda_model_is_refused_by_default(tmp_path, class_names):
    marker = tmp_path / "ran"
    inp = keras.Input((2,))
    out = keras.layers.Lambda(lambda x: x * 2.0)(inp)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    assert "Lambda" in class_names(_saved_config(path))
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path)
    assert not marker.exists()


def test_saved_kerasface_models_have_no_lambda_and_load_safely(tmp_path, class_names):
    backbone = build_backbone("vargfacenet_tiny", input_shape=(32, 32, 3), implementation="depthwise")
    models = {"verifier": SiameseVerifier(backbone, hidden_units=8), "triplet": TripletModel(backbone)}
    models["embedding"] = get_embedding_model(models["triplet"])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    for name, model in models.items():
        path = tmp_path / f"{name}.keras"
        model.save(path)
        names = class_names(_saved_config(path))
        assert "Lambda" not in names and "TFOpLambda" not in names, (name, names)
        loaded = keras.saving.load_model(path)  # safe_mode=True, no custom_objects
        if name == "embedding":
            np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)


def test_cli_evaluate_refuses_a_lambda_model(tmp_path, sample_dir, capsys):
    from kerasface.cli import main

    inp = keras.Input((32, 32, 3))
    out = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(1, 2)))(inp)
    path = tmp_path / "evil.keras"
    keras.Model(inp, out).save(path)
    assert main(["evaluate", str(path), "--data", str(sample_dir), "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "kerasface evaluate: error:" in err and "safe_mode" in err
    assert not (tmp_path / "eval").exists()
