"""The pair trainer's ``--init-from`` / ``--freeze-backbone`` (a trained backbone under report 000's head) and
resuming a run folder written before a setting existed. Real faces: the bundled LFW sample at 32x32, one
epoch, a small stand-in backbone (a grouped conv, BN, pooling, Dense 8) so that tracing stays cheap."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from kerasface.config import is_setting_default
from kerasface.layers import GroupConv2D
from kerasface.presets import get_pair_preset
from kerasface.training import train_pairs
from kerasface.training.run_folder import resume_point

SIZE = 32


def _backbone_file(tmp_path, size=SIZE):
    x = inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(x)
    x = GroupConv2D(8, 3, groups=2, implementation="split", name="grouped")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(8, name="embedding")(x), name="stand_in")
    path = tmp_path / "backbone.keras"
    model.save(path)
    return path, {w.path: w.numpy() for w in model.weights}


def _cfg(**changes):
    return get_pair_preset("vargface-init").override(image_size=SIZE, epochs=1, batch_size=32, verify_every=0,
                                                     **changes)


@pytest.fixture(scope="module")
def frozen_run(sample_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("init")
    path, before = _backbone_file(tmp)
    cfg = _cfg(data=str(sample_dir), init_from=str(path), group_conv="depthwise")
    return before, train_pairs(cfg, run_dir=tmp / "run", verbose=0)


def test_frozen_backbone_keeps_its_weights_and_the_head_learns(frozen_run):
    before, result = frozen_run
    model = keras.saving.load_model(result.run_dir / "model.keras")
    backbone = model.get_layer("stand_in")
    assert backbone.name == "stand_in"
    after = {w.path: w.numpy() for w in backbone.weights}
    assert set(after) == set(before)
    for k, v in before.items():  # BN's moving statistics included: frozen BN runs in inference mode
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    head = [w for w in model.weights if not any(w is b for b in backbone.weights)]
    assert head and all(w.trainable for w in head)
    h = json.loads((result.run_dir / "history.json").read_text())
    assert np.isfinite(h["loss"]).all() and np.isfinite(h["val_loss"]).all()
    conf = json.loads((result.run_dir / "config.json").read_text())
    assert conf["freeze_backbone"] is True and conf["init_from"].endswith("backbone.keras")


def test_group_conv_setting_reaches_the_loaded_layers(frozen_run):
    _, result = frozen_run
    model = keras.saving.load_model(result.run_dir / "model.keras")
    # the saved layer keeps the run's path (chosen when traced, not part of the weights)
    assert model.get_layer("stand_in").get_layer("grouped").implementation == "depthwise"


def test_unfrozen_backbone_trains(sample_dir, tmp_path):
    path, before = _backbone_file(tmp_path)
    result = train_pairs(_cfg(data=str(sample_dir), init_from=str(path), freeze_backbone=False),
                         run_dir=tmp_path / "run", verbose=0)
    backbone = keras.saving.load_model(result.run_dir / "model.keras").get_layer("stand_in")
    after = {w.path: w.numpy() for w in backbone.weights}
    kernel = next(k for k in before if k.endswith("stem/kernel"))
    assert not np.array_equal(after[kernel], before[kernel])


def test_init_from_errors(sample_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --init-from"):
        train_pairs(_cfg(data=str(sample_dir)), run_dir=tmp_path / "a", verbose=0)
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        train_pairs(_cfg(data=str(sample_dir), init_from=str(tmp_path)), run_dir=tmp_path / "b", verbose=0)
    path, _ = _backbone_file(tmp_path, size=48)
    with pytest.raises(ValueError, match="--image-size 48"):
        train_pairs(_cfg(data=str(sample_dir), init_from=str(path)), run_dir=tmp_path / "c", verbose=0)
    with pytest.raises(ValueError, match="--freeze-backbone needs --init-from"):
        get_pair_preset("vargface").override(freeze_backbone=True)


def test_a_folder_written_before_a_setting_existed_resumes(tmp_path):
    """A run folder's config.json without a setting added since (at its default) is the same run; the same
    setting at another value, or another setting changed, is refused."""
    cfg = get_pair_preset("vargface").to_dict()
    old = {k: v for k, v in cfg.items() if k not in ("init_from", "freeze_backbone")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    (tmp_path / "history.json").write_text(json.dumps({"loss": [0.7]}))  # a finished epoch to protect
    assert resume_point(tmp_path, cfg) == 0  # no backup yet: 0 epochs saved, but accepted
    with pytest.raises(ValueError, match="freeze_backbone: None -> True"):
        resume_point(tmp_path, cfg | {"freeze_backbone": True, "init_from": "x"})
    with pytest.raises(ValueError, match="epochs"):
        resume_point(tmp_path, cfg | {"epochs": 3})
    assert is_setting_default("freeze_backbone", False) and not is_setting_default("freeze_backbone", True)
    assert is_setting_default("holdout_folds", None) and not is_setting_default("no_such_setting", None)
