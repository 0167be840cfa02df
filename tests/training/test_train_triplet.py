"""Triplet training (report 004): presets, flags, data hold-out, monitoring helpers, and ONE end-to-end run.

The end-to-end run trains a tiny VarGFaceNet (with an L2 layer) at 32x32 for
3 epochs with semi-hard triplets mined online in P x K = 8 x 4 batches on the
bundled LFW sample: 158 images of the 58 identities with >= 2 images that
appear nowhere in ``pairsVal.txt``; it is evaluated on ``pairsVal.txt``'s 60
pairs (106 held-out faces). It runs once per module; graph tracing of the
training step dominates its cost. The monograph's offline path (selection
within each chunk, the three-input triplet graph) and the collapse stop run
end to end with a micro backbone whose training step traces in seconds
(tracing the three-input graph of the tiny VarGFaceNet takes 30-45 s here).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil

import keras
import numpy as np
import pytest

from kerasface.cli import build_parser, main
from kerasface.cli.flags import parse_folds, settings_overrides
from kerasface.config import TripletExperiment
from kerasface.data.identities import IdentityIndex
from kerasface.data.images import read_face
from kerasface.data.lfw import Pair, parse_pairs
from kerasface.data.sources import FolderSource
from kerasface.data.splits import resolve_identity_split as resolve_triplet_data
from kerasface.data.splits import write_pairs_list
from kerasface.evaluation.cases import hardest_pairs
from kerasface.ops import normalize_faces
from kerasface.presets import TRIPLET_PRESETS, get_triplet_preset
from kerasface.recognition.api import verify
from kerasface.training.tasks.triplet import train_triplet
from kerasface.training.tasks.triplet_monitor import (
    collapse_message,
    is_collapsed,
    probe_statistics,
)

EPOCHS = 3
SIZE = 32
OVERRIDES = dict(backbone="vargfacenet_tiny", image_size=SIZE, group_conv="depthwise", epochs=EPOCHS, batch_size=32,
                 mining="semi_hard", k_images=4, chunk_size=1000, images_per_identity=10, center_crop=0.6,
                 bn_momentum=0.9, learning_rate=1e-3, probe_size=48, seed=0)
PNG = b"\x89PNG\r\n\x1a\n"


def _people(pairs) -> set:
    return {n for p in pairs for n in (p.name1, p.name2)}


# --- presets and flags ---------------------------------------------------------------------------


def test_presets_reproduce_the_report_settings():
    full = get_triplet_preset("facenet-nn2")
    assert (full.backbone, full.image_size, full.embedding_dim) == ("facenet_nn2", 224, 128)
    assert (full.batch_size, full.chunk_size) == (80, 8000)  # the report's full set: trunks of 8,000, batch 80
    assert (full.mining, full.loss, full.margin) == ("offline", "hinge_squared", 0.2) and full.squared
    fine = get_triplet_preset("facenet-nn2-finetune")
    assert (fine.batch_size, fine.chunk_size, fine.epochs) == (100, 1000, 100)  # fine-tune set: trunks of 1,000
    assert full.holdout_folds == (10,) and full.train_folds is None
    for p in TRIPLET_PRESETS.values():
        assert p.collapse_floor > 0 and p.margin < 4
    with pytest.raises(ValueError, match="unknown triplet preset"):
        get_triplet_preset("facenet-nn3")


def test_preset_override_and_validation():
    base = get_triplet_preset("facenet-nn2")
    assert base.override(epochs=None, margin=None) == base
    changed = base.override(epochs=2, holdout_folds=[9, 10], train_folds=range(1, 9))
    assert changed.holdout_folds == (9, 10) and changed.train_folds == tuple(range(1, 9))
    assert changed.to_dict()["holdout_folds"] == [9, 10] and base.epochs == 100  # the slide's "Epoch: 100"
    json.dumps(changed.to_dict())  # config.json material
    with pytest.raises(ValueError, match="epochz"):
        base.override(epochz=1)
    for bad, match in ((dict(mining="hardest"), "mining"), (dict(margin=-1.0), "margin"),
                       (dict(mining="batch_hard", loss="difference"), "online mining"),
                       (dict(holdout_folds=(10,), train_folds=(9, 10)), "overlap"),
                       (dict(holdout_folds=(0,)), "numbered from 1"), (dict(center_crop=0.0), "center_crop"),
                       (dict(min_images=1), "min_images"), (dict(mining="batch_hard", batch_size=4), "batch_size")):
        with pytest.raises(ValueError, match=match):
            base.override(**bad)


def test_parse_folds():
    assert parse_folds("10") == (10,)
    assert parse_folds("1-9") == tuple(range(1, 10))
    assert parse_folds("3, 1,5-6") == (1, 3, 5, 6)
    for bad in ("0", "x", "5-3", "", "-2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_folds(bad)


def test_flags_override_the_preset():
    args = build_parser().parse_args([
        "train-triplet", "--preset", "facenet-nn2-finetune", "--data", "somewhere", "--holdout-folds", "9,10",
        "--train-folds", "1-8", "--mining", "batch_hard", "--loss", "hinge", "--margin", "0.5", "--epochs", "2",
        "--batch-size", "64", "--learning-rate", "0.01", "--image-size", "96", "--backbone", "vargfacenet_tiny",
        "--chunk-size", "500", "--seed", "7", "--out", "o", "--run-dir", "r", "--verify-every", "1",
        "--collapse-floor", "0", "--no-l2-pooling", "--eval-pairs", "e.txt", "--k-images", "8"])
    cfg = get_triplet_preset(args.preset).override(**settings_overrides(args, TripletExperiment))
    want = dict(name="facenet-nn2-finetune", data="somewhere", holdout_folds=(9, 10), train_folds=tuple(range(1, 9)),
                mining="batch_hard", loss="hinge", margin=0.5, epochs=2, batch_size=64, learning_rate=0.01,
                image_size=96, backbone="vargfacenet_tiny", chunk_size=500, seed=7, out="o", verify_every=1,
                collapse_floor=0.0, l2_pooling=False, eval_pairs="e.txt", k_images=8)
    for k, v in want.items():
        assert getattr(cfg, k) == v, k
    assert not cfg.squared and args.run_dir == "r"
    # flags not given keep the preset's values
    plain = get_triplet_preset("facenet-nn2").override(**settings_overrides(
        build_parser().parse_args(["train-triplet"]), TripletExperiment))
    assert plain == get_triplet_preset("facenet-nn2")


def test_bad_flags_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["train-triplet", "--data", str(missing), "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "no such file or folder" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written before the data is found
    assert main(["train-triplet", "--mining", "batch_hard", "--loss", "difference"]) == 2
    assert "online mining" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # argparse: a malformed fold list
        main(["train-triplet", "--holdout-folds", "0"])
    assert e.value.code == 2


# --- data: who trains, what is evaluated ------------------------------------------------------------


def test_sample_holds_out_the_validation_people(sample_dir):
    cfg = get_triplet_preset("facenet-nn2")
    td = resolve_triplet_data(cfg, sample_dir)
    val = parse_pairs(sample_dir / "pairsVal.txt")
    assert td.eval_pairs == val and len(val) == 60
    assert td.excluded == _people(val) and len(td.excluded) == 72
    assert not set(td.train.names) & td.excluded
    assert (td.train.num_identities, len(td.train)) == (58, 158)
    assert td.train.counts.min() >= 2
    # every training image belongs to a training identity's folder
    assert {p.split("/")[0] for p in td.train.paths(range(len(td.train)))} == set(td.train.names)
    everyone = IdentityIndex.open(sample_dir)
    kept = everyone.exclude(td.excluded)
    assert set(td.train.names) == {n for n, c in zip(kept.names, kept.counts) if c >= 2}
    assert td.report["eval"]["images"] == 106


def _folds_fixture(sample_dir, tmp_path):
    """A 3-fold pairs.txt over sample identities (1 matched + 1 mismatched pair per fold) next to a copy of lfw/."""
    shutil.copytree(sample_dir / "lfw", tmp_path / "lfw")
    idx = IdentityIndex.open(tmp_path)
    multi = [n for n, c in zip(idx.names, idx.counts) if c >= 3][:6]
    single = [n for n, c in zip(idx.names, idx.counts) if c == 1][:6]
    lines = ["3\t1"]
    for f in range(3):
        lines += [f"{multi[2 * f]}\t1\t2", f"{multi[2 * f + 1]}\t1\t{single[f]}\t1"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    return idx, multi, single


def test_folds_list_holdout_and_train_folds(sample_dir, tmp_path):
    idx, multi, single = _folds_fixture(sample_dir, tmp_path)
    cfg = get_triplet_preset("facenet-nn2").override(holdout_folds=(3,))
    td = resolve_triplet_data(cfg, tmp_path)
    assert [p.fold for p in td.eval_pairs] == [2, 2] and td.excluded == {multi[4], multi[5], single[2]}
    assert not set(td.train.names) & td.excluded
    assert td.train.num_identities == sum(1 for n, c in zip(idx.names, idx.counts) if c >= 2) - 2
    only = resolve_triplet_data(cfg.override(train_folds=(1,)), tmp_path)
    assert set(only.train.names) == {multi[0], multi[1]}  # fold 1's people with >= 2 images
    with pytest.raises(ValueError, match="do not exist"):
        resolve_triplet_data(cfg.override(holdout_folds=(4,)), tmp_path)
    # an explicit evaluation list wins over the folds
    ev = resolve_triplet_data(cfg.override(eval_pairs=str(sample_dir / "pairsVal.txt")), tmp_path)
    assert len(ev.eval_pairs) == 60 and not set(ev.train.names) & _people(ev.eval_pairs)


def test_shared_lfw_fold10_holdout(shared_lfw):
    cfg = get_triplet_preset("facenet-nn2")
    td = resolve_triplet_data(cfg, shared_lfw / "lfw.zip")
    assert len(td.eval_pairs) == 600 and {p.fold for p in td.eval_pairs} == {9}
    assert sum(p.same for p in td.eval_pairs) == 300
    assert not set(td.train.names) & td.excluded and len(td.excluded) == 451
    assert (td.train.num_identities, len(td.train)) == (1505, 7829)
    folds = resolve_triplet_data(cfg.override(train_folds=tuple(range(1, 10))), shared_lfw)
    assert (folds.train.num_identities, len(folds.train)) == (1453, 7696)


def test_write_pairs_list_round_trip(tmp_path, sample_dir):
    val = parse_pairs(sample_dir / "pairsVal.txt")
    assert write_pairs_list(val, tmp_path / "v.txt") and parse_pairs(tmp_path / "v.txt") == val
    two = [Pair("A", 1, "A", 2, True, 4), Pair("A", 1, "B", 1, False, 4),
           Pair("C", 1, "C", 3, True, 7), Pair("C", 2, "D", 5, False, 7)]
    assert write_pairs_list(two, tmp_path / "f.txt")
    back = parse_pairs(tmp_path / "f.txt")
    assert [(p.name1, p.idx1, p.name2, p.idx2, p.same) for p in back] == [
        (p.name1, p.idx1, p.name2, p.idx2, p.same) for p in two]
    assert [p.fold for p in back] == [0, 0, 1, 1]
    assert not write_pairs_list(two[:3], tmp_path / "bad.txt") and not (tmp_path / "bad.txt").exists()


# --- monitoring helpers against brute force ----------------------------------------------------------


def test_probe_statistics_match_loops():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(13, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lab = rng.integers(0, 4, 13)
    for squared in (True, False):
        s = probe_statistics(e, lab, 0.3, squared)
        dist = lambda i, j: float(np.linalg.norm(e[i] - e[j]))  # noqa: E731
        pairs = [(i, j) for i in range(13) for j in range(i + 1, 13)]
        assert s["mean_distance"] == pytest.approx(np.mean([dist(i, j) for i, j in pairs]))
        assert s["pos_distance"] == pytest.approx(np.mean([dist(i, j) for i, j in pairs if lab[i] == lab[j]]))
        assert s["neg_distance"] == pytest.approx(np.mean([dist(i, j) for i, j in pairs if lab[i] != lab[j]]))
        h = [(dist(a, p) ** (2 if squared else 1)) - (dist(a, n) ** (2 if squared else 1)) + 0.3
             for a in range(13) for p in range(13) for n in range(13)
             if a != p and lab[a] == lab[p] and lab[a] != lab[n]]
        assert s["triplets"] == len(h)
        assert s["active_fraction"] == pytest.approx(np.mean(np.array(h) > 0))
        assert s["loss"] == pytest.approx(np.mean(np.maximum(h, 0)))


def test_collapse_is_detected():
    collapsed = np.tile([[0.6, 0.8]], (8, 1)) + 1e-8 * np.arange(8)[:, None]
    s = probe_statistics(collapsed, np.repeat([0, 1], 4), 0.2, True)
    assert s["mean_distance"] < 1e-6 and s["active_fraction"] == 1.0  # every hinge equals the margin
    assert s["loss"] == pytest.approx(0.2)
    assert is_collapsed(s["mean_distance"], 1e-2) and not is_collapsed(s["mean_distance"], 0.0)
    assert is_collapsed(float("nan"), 1e-2) and not is_collapsed(0.5, 1e-2)
    msg = collapse_message(s["mean_distance"], 1e-2, 3, 8)
    assert "collapsed at epoch 3" in msg and "--collapse-floor 0" in msg


def test_hardest_pairs_match_brute_force():
    rng = np.random.default_rng(5)
    e = rng.normal(size=(11, 4))
    lab = np.array(list("aabbbccdde" + "a"))
    valid = np.ones(11, bool)
    valid[3] = False
    pos, neg, same_d, diff_d = hardest_pairs(e, lab, n=3, valid=valid)
    allp = [(np.linalg.norm(e[i] - e[j]), i, j) for i in range(11) for j in range(i + 1, 11) if valid[i] and valid[j]]
    want_pos = sorted([t for t in allp if lab[t[1]] == lab[t[2]]], key=lambda t: -t[0])[:3]
    want_neg = sorted([t for t in allp if lab[t[1]] != lab[t[2]]], key=lambda t: t[0])[:3]
    assert [(c.i, c.j) for c in pos] == [(i, j) for _, i, j in want_pos]
    assert [(c.i, c.j) for c in neg] == [(i, j) for _, i, j in want_neg]
    assert [c.distance for c in pos] == pytest.approx([d for d, _, _ in want_pos])
    assert len(same_d) + len(diff_d) == len(allp) and all(c.same for c in pos) and not any(c.same for c in neg)


# --- offline selection and the collapse stop, with a micro backbone (traces in seconds) ------------------


def _micro(input_shape=(SIZE, SIZE, 3), embedding_dim=128, **_):
    """Two convolutions and a dense layer: Keras built-ins only, so its saved files load anywhere."""
    x = keras.Input(input_shape, name="image")
    y = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(x)
    y = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2")(y)
    y = keras.layers.GlobalAveragePooling2D(name="gap")(y)
    return keras.Model(x, keras.layers.Dense(embedding_dim, name="fc")(y), name="micro")


@pytest.fixture
def micro_backbone(monkeypatch):
    from kerasface.models import registry

    monkeypatch.setitem(registry.BACKBONES, "micro", _micro)
    return "micro"


def test_offline_selection_run(micro_backbone, tmp_path):
    """The monograph's path: per chunk, embed, select semi-hard triplets, fit the three-input graph."""
    cfg = get_triplet_preset("facenet-nn2").override(
        backbone=micro_backbone, image_size=SIZE, mining="offline", batch_size=32, epochs=2, chunk_size=100,
        images_per_identity=10, center_crop=0.6, probe_size=32, verify_every=1, max_triplets_per_chunk=40)
    result = train_triplet(cfg, run_dir=tmp_path / "run", verbose=0)
    h = _json(result, "history.json")
    assert "batches" not in h and np.isfinite(h["loss"]).all()
    assert all(0 < t <= 2 * 40 for t in h["triplets"])  # 158 images in chunks of <= 100: 2 chunks, capped at 40
    assert all(s >= t for s, t in zip(h["selected"], h["triplets"]))  # the cap applies after selection
    assert all(0 < f <= 1 for f in h["selected_fraction"]) and all(0 <= a <= 1 for a in h["triplet_accuracy"])
    assert result.metrics["images_seen"] == 3 * sum(h["triplets"])
    assert h["verify_auc"][0] is not None and h["verify_auc"][1] is not None  # every epoch
    assert result.metrics["complete"] and result.metrics["verification"]["pairs_accounting"]["evaluated"] == 60
    assert result.triplet_model.get_layer("distances") is not None and result.triplet_model.optimizer.built
    assert result.model.get_layer("l2_embedding") is not None  # the backbone got its L2 layer
    emb = keras.ops.convert_to_numpy(result.model(np.zeros((2, SIZE, SIZE, 3), "float32") + 0.3))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert {p.name for p in result.run_dir.iterdir()} >= {"model.keras", "triplet.keras", "case_study.png"}


def test_collapse_stops_the_run_with_exit_4(micro_backbone, tmp_path, capsys):
    """A floor above any possible mean distance (unit vectors are at most 2 apart) stops after epoch 1."""
    run_dir = tmp_path / "run"
    code = main(["train-triplet", "--backbone", micro_backbone, "--image-size", str(SIZE), "--mining", "semi_hard",
                 "--batch-size", "32", "--epochs", "3", "--collapse-floor", "2.5", "--center-crop", "0.6",
                 "--run-dir", str(run_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 4 and "collapsed at epoch 1" in err and "Traceback" not in err
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["epochs_run"] == 1 and m["complete"] is False
    assert m["collapse"]["epoch"] == 1 and m["collapse"]["floor"] == 2.5 and "collapsed" in m["stopped"]
    assert m["collapse"]["probe_train_mean_distance"] < 2.5
    assert len(json.loads((run_dir / "history.json").read_text())["loss"]) == 1
    # the stopped run is still evaluated and its models saved
    assert m["verification"]["pairs_accounting"]["evaluated"] == 60
    assert (run_dir / "model.keras").is_file() and (run_dir / "case_study.png").is_file()


# --- one end-to-end run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(sample_dir, tmp_path_factory):
    cfg = get_triplet_preset("facenet-nn2").override(**OVERRIDES)
    run_dir = tmp_path_factory.mktemp("triplet") / "run"
    result = train_triplet(cfg, run_dir=run_dir, verbose=0)
    return cfg, result


def _json(result, name):
    return json.loads((result.run_dir / name).read_text())


def test_run_folder_contents(run):
    _, result = run
    names = {p.name for p in result.run_dir.iterdir()}
    for name in ("model.keras", "triplet.keras", "config.json", "history.csv", "history.json", "curves.png",
                 "metrics.json", "data_report.json", "roc.png", "cases.png", "case_study.png",
                 "train_identities.txt", "eval_pairs.txt"):
        assert name in names, name
    assert not [n for n in names if n.startswith(".")], names  # no leftover temporary files
    c = _json(result, "config.json")
    for k, v in OVERRIDES.items():
        assert c[k] == v, k
    assert c["name"] == "facenet-nn2" and c["mining"] == "semi_hard" and c["loss"] == "hinge_squared"


def test_history_and_loss_decreases(run):
    _, result = run
    h = _json(result, "history.json")
    for key in ("loss", "batches", "probe_mean_distance", "probe_pos_distance", "probe_neg_distance",
                "probe_active_fraction", "probe_loss", "probe_train_mean_distance"):
        assert len(h[key]) == EPOCHS and np.isfinite(h[key]).all(), key
    assert h["loss"][-1] < h["loss"][0], h["loss"]  # the semi-hard loss of the mined batches
    assert h["probe_loss"][-1] < h["probe_loss"][0], h["probe_loss"]  # every triplet of the fixed probe faces
    assert h["probe_active_fraction"][-1] < h["probe_active_fraction"][0]
    # 58 identities, P = 32 // 4 = 8 distinct identities per batch: 7 P x K batches an epoch
    assert h["batches"] == [7] * EPOCHS and "triplets" not in h
    assert result.metrics["images_seen"] == EPOCHS * 7 * 32
    with open(result.run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    np.testing.assert_allclose([float(r["loss"]) for r in rows], h["loss"], rtol=1e-6)
    # verification ran at the end only (verify_every=0): NaN (null) before
    assert h["verify_auc"][:-1] == [None] * (EPOCHS - 1) and h["verify_auc"][-1] is not None


def test_embeddings_do_not_collapse(run):
    cfg, result = run
    h = _json(result, "history.json")
    m = _json(result, "metrics.json")
    floor = 10 * cfg.collapse_floor
    assert min(h["probe_mean_distance"]) > floor, h["probe_mean_distance"]
    assert min(h["probe_train_mean_distance"]) > floor, h["probe_train_mean_distance"]
    assert min(h["probe_neg_distance"]) > floor  # different people stay apart
    assert h["probe_neg_distance"][-1] > h["probe_pos_distance"][-1]  # and farther than the same person
    assert m["collapse"] is None and m["stopped"] is None and m["complete"] is True
    assert m["epochs_run"] == EPOCHS and 40 <= m["probe_images"] <= 48


def test_metrics_and_verification(run, sample_dir):
    _, result = run
    m = _json(result, "metrics.json")
    assert m == result.metrics
    v = m["verification"]
    assert v["pairs_accounting"]["evaluated"] == 60 and v["model_kind"] == "embedding" and v["score"] == "l2"
    assert 0.0 <= v["heldout_accuracy_mean"] <= 1.0 and v["heldout_accuracy_folds"] == 10
    assert 0.0 <= v["auc"] <= 1.0 and v["threshold_rule"].startswith("same when distance")
    h = _json(result, "history.json")
    assert v["auc"] == pytest.approx(h["verify_auc"][-1]) and v["heldout_accuracy_mean"] == pytest.approx(
        h["verify_accuracy"][-1])
    assert (m["train_identities"], m["train_images"], m["eval_pairs"]) == (58, 158, 60)
    r = _json(result, "data_report.json")
    assert r["eval"]["pairs"] == 60 and r["eval"]["people"] == 72 and r["eval"]["list"] == "eval_pairs.txt"
    assert parse_pairs(result.run_dir / "eval_pairs.txt") == parse_pairs(sample_dir / "pairsVal.txt")


def test_face_spec_records_how_the_faces_were_prepared(run):
    cfg, result = run
    spec = _json(result, "face_spec.json")
    v = _json(result, "metrics.json")["verification"]
    assert spec["image_size"] == [cfg.image_size, cfg.image_size] and spec["center_crop"] == cfg.center_crop
    assert (spec["alignment"], spec["input_scaling"], spec["metric"]) == ("none", "kerasface", "l2")
    assert spec["threshold"] == pytest.approx(v["best_threshold"]) and "final evaluation" in spec["threshold_source"]


def test_verify_follows_the_run_folder(run, sample_dir):
    _, result = run
    spec = _json(result, "face_spec.json")
    pair = parse_pairs(sample_dir / "pairsVal.txt")[0]
    r = verify(sample_dir / "lfw" / pair.path1, sample_dir / "lfw" / pair.path2, result.run_dir)
    assert (r["metric"], r["threshold"]) == ("l2", spec["threshold"]) and r["same"] is (r["score"] <= r["threshold"])
    source = FolderSource(sample_dir / "lfw")
    ea, eb = (np.asarray(result.model(normalize_faces(read_face(source, rel, spec["image_size"][0],
                                                                spec["center_crop"])[None])))[0]
              for rel in (pair.path1, pair.path2))
    ea, eb = ea / np.linalg.norm(ea), eb / np.linalg.norm(eb)
    assert r["score"] == pytest.approx(float(np.linalg.norm(ea - eb)), abs=1e-4)


def test_held_out_identities_absent_from_training(run, sample_dir):
    _, result = run
    held = _people(parse_pairs(sample_dir / "pairsVal.txt"))
    trained = (result.run_dir / "train_identities.txt").read_text().split()
    assert trained == result.data.train.names and len(trained) == 58
    assert not set(trained) & held
    idx = result.data.train  # the index the chunk loader read
    assert not {p.split("/")[0] for p in idx.paths(range(len(idx)))} & held


def test_case_study(run):
    _, result = run
    png = result.run_dir / "case_study.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 50_000
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 600 and img.shape[1] > 800 and img[..., :3].std() > 0.1
    cs = result.metrics["case_study"]
    assert cs["faces"] == 106 and cs["same_pairs"] + cs["different_pairs"] == 106 * 105 // 2
    pos, neg = cs["hardest_positive"], cs["hardest_negative"]
    assert len(pos) == len(neg) == 6
    assert all(p["name1"] == p["name2"] for p in pos) and all(p["name1"] != p["name2"] for p in neg)
    dp, dn = [p["distance"] for p in pos], [p["distance"] for p in neg]
    assert dp == sorted(dp, reverse=True) and dn == sorted(dn)
    assert dp[-1] >= cs["same_mean_distance"] and dn[-1] <= cs["different_mean_distance"]


def test_saved_models_load_in_fresh_process(run, fresh_process_predict):
    _, result = run
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(3, 4, SIZE, SIZE, 3)).astype("float32")
    want_e = keras.ops.convert_to_numpy(result.model(x[0], training=False))
    want_t = keras.ops.convert_to_numpy(result.triplet_model([x[0], x[1], x[2]], training=False))
    assert want_e.shape == (4, 128) and want_t.shape == (4, 2, 1)
    np.testing.assert_allclose(np.linalg.norm(want_e, axis=1), 1.0, rtol=1e-5)
    (got_e, info_e), (got_t, info_t) = fresh_process_predict([
        (result.run_dir / "model.keras", [x[0]]), (result.run_dir / "triplet.keras", [x[0], x[1], x[2]])])
    np.testing.assert_allclose(got_e, want_e, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-5, atol=1e-6)
    assert info_e["name"] == "vargfacenet_tiny_l2" and info_t["name"] == "vargfacenet_tiny_l2_triplet"
    assert info_e["implementations"] == info_t["implementations"] == ["depthwise"]


def test_run_files_respect_umask(run):
    _, result = run
    mode = os.stat(result.run_dir / "history.csv").st_mode & 0o777
    for name in ("config.json", "metrics.json", "model.keras", "triplet.keras", "case_study.png"):
        assert os.stat(result.run_dir / name).st_mode & 0o777 == mode, name


def test_training_mode_probe_has_no_side_effect(micro_backbone):
    """The collapse test embeds with BN on batch statistics; the model's moving statistics stay as they were."""
    from kerasface.training.tasks.triplet_model import build_embedding_model
    from kerasface.training.tasks.triplet_monitor import embed_training_mode

    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.BatchNormalization(name="bn")(keras.layers.Conv2D(4, 3, name="c")(x))
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D()(y))
    images = np.random.default_rng(1).integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    got = embed_training_mode(model, images)
    for a, b in zip(before, model.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    want = keras.ops.convert_to_numpy(model((images.astype("float32") - 127.5) / 128.0, training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    infer = keras.ops.convert_to_numpy(model((images.astype("float32") - 127.5) / 128.0, training=False))
    assert not np.allclose(got, infer, atol=1e-3)  # batch statistics, not the (initial) moving ones
    emb = build_embedding_model(get_triplet_preset("facenet-nn2").override(backbone=micro_backbone, image_size=SIZE))
    np.testing.assert_allclose(np.linalg.norm(embed_training_mode(emb, images), axis=1), 1.0, rtol=1e-5)
