"""Reports 001 / 003 trainer on real faces (the bundled LFW sample), small inputs.

One short run per preset family (ThinResNet AM-softmax pretraining, angular
prototypical fine-tuning from that run folder, ResNet34 ArcFace with frozen
layers, ResNet34 softmax with gradual unfreezing): the loss decreases, the run
folder is complete, the held-out accuracy equals an independent NumPy
computation, and every saved model loads with ``import kerasface`` alone in a
fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasface.data.images import read_face
from kerasface.data.sources import open_image_source
from kerasface.data.splits import split_heldout
from kerasface.presets import CLASSIFY_PRESETS, get_classify_preset, preset_report
from kerasface.training.tasks.classify import stage_blocks, train_classifier
from kerasface.training.tasks.classify_data import batch_plan, train_dataset

REPO = Path(__file__).resolve().parents[2]
SIZE = 64


def _run(tmp_path_factory, name, **over):
    cfg = get_classify_preset(name).override(**({"image_size": SIZE} | over))
    run_dir = tmp_path_factory.mktemp(name.replace("-", "_")) / "run"
    return cfg, train_classifier(cfg, run_dir=run_dir, verbose=0)


@pytest.fixture(scope="module")
def margin_run(tmp_path_factory, sample_dir):
    return _run(tmp_path_factory, "thinresnet34-amsoftmax", epochs=4, batch_size=32, cycle_epochs=8)


@pytest.fixture(scope="module")
def angproto_run(tmp_path_factory, margin_run):
    _, pre = margin_run
    return _run(tmp_path_factory, "thinresnet34-angproto-m2", epochs=3, batch_size=16, learning_rate=5e-4,
                cycle_epochs=3, init_from=str(pre.run_dir))


# --------------------------------------------------------------------------- pieces
def test_split_heldout_counts_disjoint_and_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), [1, 2, 3, 5, 10, 40])
    tr, va = split_heldout(labels, 0.1, 3, seed=4)
    assert len(np.intersect1d(tr, va)) == 0
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    held = np.bincount(labels[va], minlength=6)
    # identities with < 3 images give nothing; else max(1, round(0.1 * count))
    assert held.tolist() == [0, 0, 1, 1, 1, 4]
    tr2, va2 = split_heldout(labels, 0.1, 3, seed=4)
    assert np.array_equal(va, va2)
    _, va3 = split_heldout(labels, 0.1, 3, seed=5)
    assert not np.array_equal(va, va3)
    tr0, va0 = split_heldout(rng.permutation(labels), 0.0, 3, seed=0)
    assert len(va0) == 0 and len(tr0) == len(labels)


def test_presets_cover_the_reports():
    names = set(CLASSIFY_PRESETS)
    for bb in ("thinresnet34", "thinresnet50", "thinresnet50v2"):
        assert f"{bb}-amsoftmax" in names
        for m in (2, 3, 4):
            p = CLASSIFY_PRESETS[f"{bb}-angproto-m{m}"]
            assert p.objective == "angproto" and p.m_images == m and p.learning_rate == 5e-4
    a = CLASSIFY_PRESETS["thinresnet50-amsoftmax"]
    assert (a.head, a.scale, a.margin, a.max_per_identity, a.batch_size, a.epochs) == \
        ("amsoftmax", 30.0, 0.1, 200, 200, 60)
    assert (a.schedule, a.cycle_epochs, a.min_lr, a.optimizer) == ("cosine_restarts", 10.0, 1e-5, "adam")
    r = CLASSIFY_PRESETS["resnet34-arcface"]
    assert (r.head, r.scale, r.margin, r.optimizer, r.learning_rate, r.weight_decay, r.batch_size, r.epochs) == (
        "arcface", 5.0, 0.1, "adamw", 3e-4, 0.01, 16, 50)
    assert CLASSIFY_PRESETS["resnet34-softmax"].head == "softmax"
    with pytest.raises(ValueError, match="m_images"):
        get_classify_preset("thinresnet34-angproto-m2").override(m_images=1)
    with pytest.raises(ValueError, match="augment"):
        get_classify_preset("resnet34-arcface").override(augment="nope")


class _Faces:
    """An ImageStore stand-in: row r is a distinct uint8 face (a gradient plus r)."""

    size = 16

    def get(self, rows):
        ramp = np.add.outer(np.arange(16), np.arange(16))[..., None] * np.array([3, 5, 7])
        return np.stack([((ramp + 11 * int(r)) % 256).astype(np.uint8) for r in np.asarray(rows)])


def test_fixed_6x_set_holds_every_original_once_and_each_transform_once_per_image():
    """--augment-fixed-set (report 003's presets): an epoch is every image as it is plus its five transforms."""
    labels = np.repeat(np.arange(4), 3).astype(np.int32)  # 12 training images
    rows = np.arange(100, 112)
    plain = get_classify_preset("resnet34-arcface").override(augment_fixed_set=False, batch_size=4, image_size=16)
    cfg = plain.override(augment_fixed_set=True)
    assert get_classify_preset("resnet34-arcface").augment_fixed_set is True
    plan0, none = batch_plan(plain, labels, 0)
    plan, variants = batch_plan(cfg, labels, 0)
    assert none is None and len(plan) == 6 * len(plan0) == 18  # the epoch is 6x as long
    pairs = sorted(zip(plan.ravel().tolist(), variants.ravel().tolist()))
    assert pairs == [(p, k) for p in range(12) for k in range(6)]  # every (image, variant) exactly once
    again = batch_plan(cfg, labels, 0)
    np.testing.assert_array_equal(plan, again[0])
    np.testing.assert_array_equal(variants, again[1])
    assert not np.array_equal(plan, batch_plan(cfg, labels, 1)[0])

    store = _Faces()
    ds = train_dataset(cfg, store, rows, labels, start_epoch=0)
    out = np.concatenate([x.numpy() for (x, _), _ in ds.take(len(plan))])
    faces = (out * 128.0 + 127.5).round()  # undo normalize_faces
    originals = store.get(rows[plan.ravel()]).astype(np.float32)
    k = variants.ravel()
    np.testing.assert_array_equal(faces[k == 0], originals[k == 0])  # each original once, unchanged
    assert sorted(plan.ravel()[k == 0].tolist()) == list(range(12))
    grey = faces[k == 1]
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1)  # Grayscale(3)
    assert (np.abs(faces[k == 3] - originals[k == 3]).max(axis=(1, 2, 3)) > 0).all()  # every blurred copy changed
    # deterministic under the seed: a second pass gives the same epoch, another seed another one
    np.testing.assert_array_equal(out, np.concatenate([x.numpy() for (x, _), _ in ds.take(len(plan))]))
    other = train_dataset(cfg.override(seed=cfg.seed + 1), store, rows, labels, start_epoch=0)
    assert not np.array_equal(out, np.concatenate([x.numpy() for (x, _), _ in other.take(len(plan))]))
    with pytest.raises(ValueError, match="augment_fixed_set needs augment report003"):
        cfg.override(augment="none")
    with pytest.raises(ValueError, match="does not combine"):
        get_classify_preset("thinresnet34-angproto-m2").override(augment="report003", augment_fixed_set=True)


def test_report001_presets_cover_both_tables_and_crop_is_the_default():
    """Report 001 crops every training (0.8-1.0); colour jitter is a trial row of its augmentation table."""
    thin = {n: p for n, p in CLASSIFY_PRESETS.items() if n.startswith("thinresnet")}
    assert {p.augment for n, p in thin.items() if "-aug-" not in n} == {"report001-crop"}
    rows = {aug: CLASSIFY_PRESETS[f"thinresnet50v2-angproto-m2-b250-aug-{aug}"] for aug in ("none", "jitter", "both")}
    rows["crop"] = CLASSIFY_PRESETS["thinresnet50v2-angproto-m2-b250"]
    assert {k: v.augment for k, v in rows.items()} == {"none": "none", "jitter": "report001-jitter",
                                                       "both": "report001-both", "crop": "report001-crop"}
    assert all((v.batch_size, v.m_images, v.backbone) == (250, 2, "thin_resnet50_v2") for v in rows.values())
    eers = {k: preset_report(v.name)["validation_eer_percent"] for k, v in rows.items()}
    assert eers == {"none": 4.17125, "crop": 3.76251, "jitter": 4.20835, "both": 3.79513}
    assert CLASSIFY_PRESETS["thinresnet50-angproto-m2-b250"].batch_size == 250


@pytest.mark.parametrize("preset, backbone, default", [("sqnxt23v5-1.0", "sqnxt23v5_w1", 0.997),
                                                       ("resnet34-arcface", "resnet18", 0.9)])
def test_bn_momentum_reaches_every_batch_norm_of_the_backbone(preset, backbone, default):
    from kerasface.training.tasks.classify import build_training_model

    def momenta(cfg):
        _, bb, _ = build_training_model(cfg, num_classes=3)
        return {round(float(layer.momentum), 6) for layer in bb.layers
                if isinstance(layer, keras.layers.BatchNormalization)}

    cfg = get_classify_preset(preset).override(backbone=backbone, image_size=64)
    assert momenta(cfg) == {default}  # None: the builder's own default
    assert momenta(cfg.override(bn_momentum=0.75)) == {0.75}
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="bn_momentum"):
            cfg.override(bn_momentum=bad)


def test_dropout_sets_the_rate_of_the_pooled_features_and_refuses_backbones_without_one():
    from kerasface.training.tasks.classify import build_training_model

    def rates(cfg):
        _, bb, _ = build_training_model(cfg, num_classes=3)
        return [float(layer.rate) for layer in bb.layers if isinstance(layer, keras.layers.Dropout)]

    cfg = get_classify_preset("sqnxt23v5-1.0").override(image_size=64)
    assert cfg.dropout is None and rates(cfg) == [0.2]  # None: the builder's own rate (report 002's)
    assert rates(cfg.override(dropout=0.0)) == [0.0]
    assert rates(cfg.override(dropout=0.35)) == [0.35]
    with pytest.raises(ValueError, match="dropout"):
        cfg.override(dropout=1.0)
    with pytest.raises(ValueError, match="resnet18 has no dropout"):
        build_training_model(cfg.override(backbone="resnet18", dropout=0.1), num_classes=3)
    _, plain, _ = build_training_model(cfg.override(backbone="resnet18", dropout=0.0), num_classes=3)  # none to drop
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Dropout)]
    # --init-from: the given rate replaces the saved model's (None keeps it)
    _, start, _ = build_training_model(cfg, num_classes=3)
    _, given, _ = build_training_model(cfg.override(dropout=0.0), num_classes=3, backbone=start)
    assert given is start and rates(cfg.override(dropout=0.0)) == [0.0]
    assert [float(layer.rate) for layer in given.layers if isinstance(layer, keras.layers.Dropout)] == [0.0]
    assert build_training_model(cfg, num_classes=3, backbone=plain)[1] is plain  # None: nothing to set
    with pytest.raises(ValueError, match="--init-from model .* has no dropout layer"):
        build_training_model(cfg.override(dropout=0.3), num_classes=3, backbone=plain)


def test_stage_blocks_group_the_backbone_by_stage():
    from kerasface.models import thin_resnet34

    blocks = stage_blocks(thin_resnet34(input_shape=(64, 64, 3)))
    firsts = [b[0].split("_")[0] for b in blocks]
    assert firsts[0] == "stem" and firsts[1:5] == ["stage1", "stage2", "stage3", "stage4"]
    assert blocks[-1] == ["embedding"]


# --------------------------------------------------------------------------- runs
def test_margin_run_learns_and_writes_its_folder(margin_run):
    cfg, r = margin_run
    m = r.metrics
    for f in ("model.keras", "classifier.keras", "config.json", "history.csv", "history.json", "curves.png",
              "metrics.json", "roc.png", "cases.png", "train_identities.txt", "heldout_images.txt", "data_report.json"):
        assert (r.run_dir / f).is_file(), f
    h = json.loads((r.run_dir / "history.json").read_text())
    assert len(h["loss"]) == 4 and h["loss"][-1] < h["loss"][0]
    assert m["complete"] and m["epochs_run"] == 4
    # the evaluation pairs' people never train
    people = {ln for ln in (r.run_dir / "train_identities.txt").read_text().split("\n") if ln}
    pairs_people = {p for line in (REPO / "data/lfw_sample/pairsVal.txt").read_text().split("\n")[1:]
                    for p in line.split("\t")[0::2] if line and not p.isdigit()}
    assert pairs_people and not people & pairs_people
    v = m["verification"]
    assert v["pairs_accounting"]["evaluated"] == 60 and 0.0 <= v["auc"] <= 1.0
    assert len(h["verify_eer"]) == 4 and h["learning_rate"][-1] < h["learning_rate"][0]


def test_heldout_accuracy_matches_numpy(margin_run):
    """val_accuracy / val_loss of the last epoch vs cosines computed in NumPy from the saved models."""
    cfg, r = margin_run
    names = [ln for ln in (r.run_dir / "train_identities.txt").read_text().split("\n") if ln]
    rows = [ln.split("\t") for ln in (r.run_dir / "heldout_images.txt").read_text().split("\n") if ln]
    assert rows, "no held-out images"
    labels = np.array([int(a) for a, _ in rows])
    for (a, path) in rows:  # the label is the identity's line in train_identities.txt
        assert path.split("/")[-2] == names[int(a)]
    source = open_image_source(REPO / "data/lfw_sample")
    x = np.stack([read_face(source, p, SIZE, cfg.center_crop)
                  for _, p in rows]).astype(np.float32)
    backbone = keras.saving.load_model(r.run_dir / "model.keras")
    clf = keras.saving.load_model(r.run_dir / "classifier.keras")
    emb = np.asarray(backbone.predict((x - 127.5) / 128.0, verbose=0), np.float64)
    w = np.asarray(clf.get_layer("margin_head").kernel.numpy(), np.float64)
    cos = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    acc = float((cos.argmax(1) == labels).mean())
    logits = cfg.scale * cos
    logits[np.arange(len(labels)), labels] -= cfg.scale * cfg.margin  # AM-softmax: s (cos - m) on the target
    z = logits - logits.max(1, keepdims=True)
    ce = float((np.log(np.exp(z).sum(1)) - z[np.arange(len(labels)), labels]).mean())
    final = r.metrics["final"]
    assert final["val_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert final["val_loss"] == pytest.approx(ce, rel=2e-3, abs=2e-3)


def test_angproto_fine_tunes_from_the_pretraining_run(angproto_run, margin_run):
    cfg, r = angproto_run
    h = json.loads((r.run_dir / "history.json").read_text())
    assert len(h["loss"]) == 3 and h["loss"][-1] < h["loss"][0]
    assert "val_accuracy" not in h  # no class weights: its validation is the EER on the pairs
    assert np.isfinite(r.metrics["verification"]["eer_percent"])
    conf = json.loads((r.run_dir / "config.json").read_text())
    assert conf["init_from"] == str(margin_run[1].run_dir) and conf["objective"] == "angproto"
    # the fine-tuned backbone started from the pretrained one: same architecture, weights moved but related
    pre = keras.saving.load_model(margin_run[1].run_dir / "model.keras")
    post = keras.saving.load_model(r.run_dir / "model.keras")
    assert [v.shape for v in pre.weights] == [v.shape for v in post.weights]
    k_pre, k_post = pre.get_layer("stem_conv").kernel.numpy(), post.get_layer("stem_conv").kernel.numpy()
    rand = keras.initializers.GlorotUniform(seed=1)(k_pre.shape).numpy()  # what a fresh start would look like
    assert not np.array_equal(k_pre, k_post)
    assert np.linalg.norm(k_post - k_pre) < 0.5 * np.linalg.norm(rand - k_pre)


def test_angproto_init_from_missing_folder_is_a_clear_error(tmp_path):
    cfg = get_classify_preset("thinresnet34-angproto-m2").override(image_size=SIZE, init_from=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        train_classifier(cfg, run_dir=tmp_path / "run", verbose=0)


def test_resnet34_arcface_with_frozen_stem(tmp_path_factory):
    cfg, r = _run(tmp_path_factory, "resnet34-arcface", epochs=2, batch_size=16, freeze_first=3,
                  max_per_identity=1, verify_every=0, image_size=32)
    h = json.loads((r.run_dir / "history.json").read_text())
    assert h["loss"][-1] < h["loss"][0]
    data = json.loads((r.run_dir / "data_report.json").read_text())["train"]  # the preset's fixed 6x set
    assert data["augment_fixed_set"] and data["images_per_epoch"] == 16 * (6 * data["identities"] // 16)
    from kerasface.models import build_backbone

    keras.utils.set_random_seed(cfg.seed)
    init = build_backbone("resnet34", input_shape=(32, 32, 3))
    trained = keras.saving.load_model(r.run_dir / "model.keras")
    # among the first 3 layers: the stem conv and its BN
    frozen = [layer for layer in trained.layers if layer.weights][:2]
    for layer in frozen:
        for a, b in zip(layer.get_weights(), init.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    later = trained.get_layer("embedding").get_weights()[0]
    assert not np.array_equal(later, init.get_layer("embedding").get_weights()[0])


def test_resnet34_softmax_gradual_unfreezing(tmp_path_factory):
    cfg, r = _run(tmp_path_factory, "resnet34-softmax", epochs=2, batch_size=16, unfreeze_every=5,
                  max_per_identity=3, verify_every=0, image_size=32, augment_fixed_set=False)
    # epochs 1-2 of unfreeze_every=5: only the top two blocks (the embedding layer and the head) train
    from kerasface.models import build_backbone

    keras.utils.set_random_seed(cfg.seed)
    init = build_backbone("resnet34", input_shape=(32, 32, 3))
    trained = keras.saving.load_model(r.run_dir / "model.keras")
    np.testing.assert_array_equal(trained.get_layer("stem_conv").get_weights()[0],
                                  init.get_layer("stem_conv").get_weights()[0])
    assert not np.array_equal(trained.get_layer("embedding").get_weights()[0],
                              init.get_layer("embedding").get_weights()[0])
    h = json.loads((r.run_dir / "history.json").read_text())
    assert h["loss"][-1] < h["loss"][0]


def test_saved_models_load_in_a_fresh_process(margin_run, angproto_run, fresh_process_predict, tmp_path):
    source = open_image_source(REPO / "data/lfw_sample")
    faces = np.stack([read_face(source, p, SIZE, 1.0) for p in sorted(source.list_images())[:4]])
    x = ((faces.astype(np.float32) - 127.5) / 128.0)
    jobs = []
    for _, r in (margin_run, angproto_run):
        model = keras.saving.load_model(r.run_dir / "model.keras")
        expected = np.asarray(model.predict(x, verbose=0))
        jobs.append((r.run_dir / "model.keras", [x], expected))
    clf = keras.saving.load_model(margin_run[1].run_dir / "classifier.keras")
    lab = np.zeros(len(x), np.int32)
    jobs.append((margin_run[1].run_dir / "classifier.keras", [x, lab], np.asarray(clf([x, lab], training=False))))
    results = fresh_process_predict([(path, inputs) for path, inputs, _ in jobs])
    for (_, _, expected), (pred, _info) in zip(jobs, results):
        np.testing.assert_allclose(pred, expected, rtol=1e-4, atol=1e-5)


def test_cli_train_routes_a_classification_preset(tmp_path):
    """`kerasface train --preset <classification preset>` reaches train-classify (its own flags and errors);
    a complete CLI run with its printed summary is in tests/training/test_train_report002.py."""
    bad = subprocess.run([sys.executable, "-m", "kerasface.cli", "train", "--preset", "thinresnet34-angproto-m2",
                          "--init-from", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r2")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode == 2 and "no model.keras" in bad.stderr and "train-classify" in bad.stderr


def test_mixed_bfloat16_runtime_keeps_float32_logits(tmp_path):
    from kerasface.training.distribute import Runtime

    cfg = get_classify_preset("thinresnet34-amsoftmax").override(image_size=32, epochs=1, batch_size=32,
                                                                 verify_every=0)
    r = train_classifier(cfg, run_dir=tmp_path / "run", verbose=0, runtime=Runtime(mixed_precision="bfloat16"))
    assert json.loads((r.run_dir / "config.json").read_text())["runtime"]["policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    clf = keras.saving.load_model(r.run_dir / "classifier.keras")
    assert clf.get_layer("margin_head").compute_dtype == "float32"
    conv = clf.get_layer("stem_conv")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert np.isfinite(r.metrics["final"]["loss"])
