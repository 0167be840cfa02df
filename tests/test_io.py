"""kerasface.io.save_model: the inference artefact (no optimizer) and the in-memory model left as it was;
first_line, the line of an error that one-line messages quote."""

import json
import zipfile

import keras
import numpy as np

from kerasface.io import first_line, save_model


def _trained():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(512), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 8)), rng.integers(0, 2, 16), verbose=0)
    return model


def test_save_without_optimizer_writes_weights_only_and_leaves_the_model_training(tmp_path):
    model = _trained()
    optimizer = model.optimizer
    save_model(model, tmp_path / "full.keras")
    save_model(model, tmp_path / "bare.keras", include_optimizer=False)
    # the in-memory model is untouched: same optimizer object, still compiled, its step count goes on
    assert model.optimizer is optimizer and model.compiled and int(optimizer.iterations) == 1
    model.fit(np.ones((4, 8)), np.zeros(4, int), verbose=0)
    assert int(optimizer.iterations) == 2

    with zipfile.ZipFile(tmp_path / "bare.keras") as z:
        assert not json.loads(z.read("config.json")).get("compile_config")
    full, bare = (tmp_path / "full.keras").stat().st_size, (tmp_path / "bare.keras").stat().st_size
    assert bare < 0.5 * full  # Adam(W) keeps two moments per weight: about a third
    loaded = keras.saving.load_model(tmp_path / "bare.keras")
    assert not loaded.compiled and not hasattr(loaded, "optimizer") or loaded.optimizer is None
    reference = keras.saving.load_model(tmp_path / "full.keras")
    x = np.random.default_rng(1).random((3, 8)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), reference.predict(x, verbose=0))


def test_an_uncompiled_model_saves_either_way(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    save_model(model, tmp_path / "m.keras", include_optimizer=False)
    assert keras.saving.load_model(tmp_path / "m.keras").count_params() == 8


def test_first_line_of_an_error():
    assert first_line(ValueError("\n  bad header\nTraceback details\n")) == "bad header"
    assert first_line(OSError("disk full"), limit=4) == "disk"
    assert first_line(KeyError()) == "" and first_line("   \n ") == ""
