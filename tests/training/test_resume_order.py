"""A resumed run sees the data of the run that never stopped (issue 16, section 7).

A run crashed after epoch 1's backup and resumed used to replay epoch 1's pair order in every later
epoch.  Here each trainer runs 3 epochs straight, and again with a crash after epoch 2's files
(before its backup), resumed by the same call: the weights at the end and the per-epoch training
loss are the same (float tolerance), which holds only when every epoch's order and augmentation
depend on the epoch number, resumed or not.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_resume_nan import _micro_embedder, _tiny_verifier  # tests/training is on sys.path (rootdir imports)

from kerasface.training.callbacks import RunBackup


class _Crash(Exception):
    pass


def _straight_and_resumed(train, tmp_path, monkeypatch):
    straight = train(tmp_path / "straight")
    real = RunBackup.save

    def crash(self, epochs_done, model=None):
        if epochs_done == 2:  # epoch 2's files are written, its backup never is: the rerun redoes epoch 2
            raise _Crash
        real(self, epochs_done, model)

    monkeypatch.setattr(RunBackup, "save", crash)
    with pytest.raises(_Crash):
        train(tmp_path / "resumed")
    monkeypatch.setattr(RunBackup, "save", real)
    resumed = train(tmp_path / "resumed")
    return straight, resumed


def _same_run(straight, resumed, model_of):
    h1 = json.loads((straight.run_dir / "history.json").read_text())
    h2 = json.loads((resumed.run_dir / "history.json").read_text())
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-4)
    for w1, w2 in zip(model_of(straight).weights, model_of(resumed).weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(w1), keras.ops.convert_to_numpy(w2), rtol=1e-4,
                                   atol=1e-5, err_msg=w1.path)


def test_train_pairs_resumed_equals_uninterrupted(sample_dir, tmp_path, monkeypatch):
    import kerasface.training.tasks.pairs as pairs_mod
    from kerasface.presets import get_pair_preset
    from kerasface.training import train_pairs

    monkeypatch.setattr(pairs_mod, "build_verifier", _tiny_verifier(1e-2))
    cfg = get_pair_preset("vargface").override(image_size=16, epochs=3, batch_size=16, seed=0, verify_every=0,
                                               augment="flip", data=str(sample_dir))
    straight, resumed = _straight_and_resumed(lambda d: train_pairs(cfg, run_dir=d, verbose=0), tmp_path, monkeypatch)
    _same_run(straight, resumed, lambda r: r.model)


def test_train_classify_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    from kerasface.models import registry
    from kerasface.presets import get_classify_preset
    from kerasface.training.tasks.classify import train_classifier

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    cfg = get_classify_preset("thinresnet34-amsoftmax").override(backbone="micro_nan", image_size=32, epochs=3,
                                                                 batch_size=32, verify_every=0,
                                                                 augment="report001-both")
    straight, resumed = _straight_and_resumed(lambda d: train_classifier(cfg, run_dir=d, verbose=0), tmp_path,
                                              monkeypatch)
    _same_run(straight, resumed, lambda r: r.model)


def test_train_triplet_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    from kerasface.models import registry
    from kerasface.presets import get_triplet_preset
    from kerasface.training.tasks.triplet import train_triplet

    monkeypatch.setitem(registry.BACKBONES, "micro_nan", _micro_embedder)
    cfg = get_triplet_preset("facenet-nn2").override(
        backbone="micro_nan", image_size=32, mining="semi_hard", batch_size=32, k_images=4, epochs=3,
        chunk_size=1000, images_per_identity=10, center_crop=0.6, probe_size=32, verify_every=0)
    straight, resumed = _straight_and_resumed(lambda d: train_triplet(cfg, run_dir=d, verbose=0), tmp_path,
                                              monkeypatch)
    _same_run(straight, resumed, lambda r: r.model)
