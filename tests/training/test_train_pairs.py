"""Pair-list resolution, presets, and one short end-to-end training run on real LFW faces.

The end-to-end run (tiny VarGFaceNet, 32x32, 4 epochs on the bundled sample's
180 training / 60 validation pairs) happens once per module and is shared by
the assertions below. Graph tracing dominates its cost (~40-70 s on a busy
2-core CPU): the grouped convs use the ``depthwise`` path, whose graph is the
cheapest to trace here. The train loss fell from the first to the last epoch
with seeds 0, 1, 2 on both the depthwise and the split path (lr 1e-3:
1.66 -> 1.00, 1.67 -> 1.03, 2.06 -> 1.18).
"""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasface.data import PairData, parse_pairs
from kerasface.data.splits import resolve_pair_lists
from kerasface.presets import PAIR_PRESETS, get_pair_preset
from kerasface.training import train_pairs

EPOCHS = 4
SIZE = 32
OVERRIDES = dict(backbone="vargfacenet_tiny", image_size=SIZE, epochs=EPOCHS, batch_size=32,
                 learning_rate=1e-3, group_conv="depthwise", seed=0, verify_every=2)


# --- pair lists ----------------------------------------------------------------------------------


def test_resolve_sample_lists(sample_dir):
    train, val = resolve_pair_lists(sample_dir, None, None)
    assert train == sample_dir / "pairsTrain.txt" and train.is_file()
    assert val == sample_dir / "pairsVal.txt" and val.is_file()


def test_resolve_shared_lfw_lists(shared_lfw):
    train, val = resolve_pair_lists(shared_lfw, None, None)
    assert (train, val) == (shared_lfw / "pairs.txt", shared_lfw / "pairsDevTest.txt")
    # --data can name the zip: the lists are looked for next to it
    assert resolve_pair_lists(shared_lfw / "lfw.zip", None, None) == (train, val)
    assert resolve_pair_lists(shared_lfw, "pairsDevTrain.txt", None) == (
        shared_lfw / "pairsDevTrain.txt", shared_lfw / "pairsDevTest.txt")


def test_resolve_without_lists_raises_helpful_error(tmp_path):
    (tmp_path / "lfw").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        resolve_pair_lists(tmp_path, None, None)
    msg = str(e.value)
    for part in (str(tmp_path), "pairs.txt", "pairsDevTest.txt", "pairsTrain.txt", "pairsVal.txt",
                 "--train-pairs"):
        assert part in msg, (part, msg)


def test_resolve_explicit_names(sample_dir, tmp_path):
    # swapped names are honoured
    assert resolve_pair_lists(sample_dir, "pairsVal.txt", "pairsTrain.txt") == (
        sample_dir / "pairsVal.txt", sample_dir / "pairsTrain.txt")
    # one explicit name, the other from the defaults found next to the data
    assert resolve_pair_lists(sample_dir, None, "pairsTrain.txt") == (
        sample_dir / "pairsTrain.txt", sample_dir / "pairsTrain.txt")
    # a path anywhere
    mine = tmp_path / "my_pairs.txt"
    shutil.copy(sample_dir / "pairsVal.txt", mine)
    assert resolve_pair_lists(sample_dir, str(mine), "pairsVal.txt") == (mine, sample_dir / "pairsVal.txt")
    # a name that exists nowhere
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        resolve_pair_lists(sample_dir, "nope.txt", None)


def test_resolve_default_lists_ignore_cwd(sample_dir, tmp_path, monkeypatch):
    for name in ("pairs.txt", "pairsDevTest.txt"):
        (tmp_path / name).write_text("1\t1\nSomeone\t1\t2\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_pair_lists(sample_dir, None, None) == (
        sample_dir / "pairsTrain.txt", sample_dir / "pairsVal.txt")


# --- presets ---------------------------------------------------------------------------------------


def test_presets_and_low_light_flag():
    assert set(PAIR_PRESETS) == {"vargface", "vargface-reduced", "vargface-lowlight",
                                 "vargface-reduced-lowlight", "vargface-init"}
    assert get_pair_preset("vargface-init").freeze_backbone and get_pair_preset("vargface-init").init_from
    assert get_pair_preset("vargface-lowlight").low_light is True
    assert get_pair_preset("vargface-reduced-lowlight").low_light is True
    assert get_pair_preset("vargface").low_light is False
    assert get_pair_preset("vargface-reduced").backbone == "vargfacenet_reduced"
    with pytest.raises(ValueError, match="unknown preset"):
        get_pair_preset("vargface-huge")


def test_preset_override():
    base = get_pair_preset("vargface")
    with pytest.raises(ValueError, match="epochz"):
        base.override(epochz=3)
    assert base.override(epochs=None, data=None, low_light=None) == base
    changed = base.override(epochs=3, low_light=False, learning_rate=None)
    assert changed.epochs == 3 and changed.learning_rate == base.learning_rate
    assert base.epochs == 20  # presets are frozen; override returns a copy
    assert changed.to_dict() == base.to_dict() | {"epochs": 3}


# --- one end-to-end run --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(sample_dir, tmp_path_factory):
    cfg = get_pair_preset("vargface").override(**OVERRIDES)
    run_dir = tmp_path_factory.mktemp("train") / "run"
    result = train_pairs(cfg, run_dir=run_dir, verbose=0)
    return cfg, result


@pytest.fixture(scope="module")
def val_batch(sample_dir):
    data = PairData.from_pairs(parse_pairs(sample_dir / "pairsVal.txt"), sample_dir, size=SIZE,
                               progress=False)
    (a, b), y = next(iter(data.dataset(batch_size=16, shuffle=False)))
    return a.numpy(), b.numpy(), y.numpy()


def test_run_folder_contents(run):
    _, result = run
    names = {p.name for p in result.run_dir.iterdir()}
    for name in ("model.keras", "config.json", "history.csv", "history.json", "curves.png",
                 "metrics.json", "data_report.json", "roc.png", "cases.png"):
        assert name in names, name
    assert not [n for n in names if n.startswith(".")], names  # no leftover temporary files


def test_train_loss_decreases(run):
    _, result = run
    h = json.loads((result.run_dir / "history.json").read_text())
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert len(h[key]) == EPOCHS, key
        assert np.isfinite(h[key]).all(), key
    assert h["loss"][-1] < h["loss"][0], h["loss"]


def test_config_json(run, sample_dir):
    cfg, result = run
    c = json.loads((result.run_dir / "config.json").read_text())
    assert Path(c["data"]).resolve() == sample_dir.resolve()
    assert Path(c["train_pairs"]).resolve() == (sample_dir / "pairsTrain.txt").resolve()
    assert Path(c["eval_pairs"]).resolve() == (sample_dir / "pairsVal.txt").resolve()
    for k, v in OVERRIDES.items():
        assert c[k] == v, k
    assert c["name"] == "vargface" and c["low_light"] is False


def test_history_csv(run):
    _, result = run
    with open(result.run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == EPOCHS
    h = json.loads((result.run_dir / "history.json").read_text())
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([float(r[key]) for r in rows], h[key], rtol=1e-6)


def test_curves_png(run):
    _, result = run
    png = result.run_dir / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_metrics_json(run):
    _, result = run
    m = json.loads((result.run_dir / "metrics.json").read_text())
    h = json.loads((result.run_dir / "history.json").read_text())
    assert m["epochs_run"] == EPOCHS
    assert m.get("complete", True) is True
    assert 0.0 <= m["final"]["val_accuracy"] <= 1.0
    assert 0.0 <= m["best_val_accuracy"] <= 1.0
    assert m["final"]["val_accuracy"] == pytest.approx(h["val_accuracy"][-1])
    assert m["final"]["loss"] == pytest.approx(h["loss"][-1])
    assert m["best_val_accuracy"] == pytest.approx(max(h["val_accuracy"]))
    assert m == result.metrics


def test_data_report(run, sample_dir):
    _, result = run
    r = json.loads((result.run_dir / "data_report.json").read_text())
    n_train = len(parse_pairs(sample_dir / "pairsTrain.txt"))
    n_val = len(parse_pairs(sample_dir / "pairsVal.txt"))
    assert r["train"]["requested"] == r["train"]["kept"] == n_train == result.metrics["train_pairs"]
    assert r["validation"]["requested"] == r["validation"]["kept"] == n_val == result.metrics["val_pairs"]
    assert r["train"]["missing"] == r["train"]["corrupt"] == 0
    assert r["train"]["same"] + r["train"]["different"] == n_train


def test_saved_model_loads_in_fresh_process(run, val_batch, fresh_process_predict):
    _, result = run
    a, b, _ = val_batch
    want = keras.ops.convert_to_numpy(result.model([a, b], training=False))
    assert want.shape == (len(a), 2)
    [(got, info)] = fresh_process_predict([(result.run_dir / "model.keras", [a, b])])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert info["implementations"] == ["depthwise"]
    assert info["name"] == "vargfacenet_tiny_verifier"


def test_run_files_respect_umask(run):
    _, result = run
    csv_mode = stat.S_IMODE((result.run_dir / "history.csv").stat().st_mode)
    for name in ("config.json", "metrics.json", "model.keras"):
        assert stat.S_IMODE((result.run_dir / name).stat().st_mode) == csv_mode, name


def test_verification_in_history_and_metrics(run, sample_dir):
    """VerificationCallback (every 2 epochs) logs AUC/EER/accuracy; the run ends with a full report."""
    _, result = run
    h = json.loads((result.run_dir / "history.json").read_text())
    for key in ("val_verify_accuracy", "val_verify_auc", "val_verify_eer"):
        assert len(h[key]) == EPOCHS, key
        assert h[key][0] is None and h[key][2] is None, (key, h[key])  # epochs 1 and 3: not evaluated
        assert h[key][1] is not None and h[key][3] is not None, (key, h[key])
    v = json.loads((result.run_dir / "metrics.json").read_text())["verification"]
    assert v["pairs_accounting"]["evaluated"] == len(parse_pairs(sample_dir / "pairsVal.txt")) == 60
    assert v["model_kind"] == "verifier" and v["score"] == "same_prob"
    # The final report scores the same model on the same pairs as the callback's last evaluation.
    assert v["auc"] == pytest.approx(h["val_verify_auc"][-1], abs=1e-9)
    assert v["eer_percent"] == pytest.approx(h["val_verify_eer"][-1], abs=1e-9)
    # ... and agrees with the validation accuracy Keras measured at p(same) >= 0.5.
    assert v["accuracy_at_0.5"] == pytest.approx(h["val_accuracy"][-1], abs=1e-6)
