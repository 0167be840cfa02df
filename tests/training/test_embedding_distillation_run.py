"""Embedding distillation from a frozen teacher through the classification trainer, on real faces.

Two chip folders of the bundled LFW sample with the same relative paths stand in for
`kerasface align --size 112` and `kerasface align --template dlib --size 150`: the student's
(central half of each photo at 32x32) and the teacher's own (central 60 % at 48x48, another
framing and size). The teacher is a small frozen network saved as a ``.keras`` file (the
pretrained dlib ResNet is too slow to embed every sample image in CI; it goes through the same
path, a model with a FaceSpec). Checked: the cached teacher embeddings equal ones recomputed
here by hand (image and mirror), are reused on a second call and recomputed for another
teacher; a short run from a saved initial student lowers the distillation loss and raises the
student's cosine similarity to the teacher on the held-out people (never trained on).
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from kerasface.config import ClassifyExperiment
from kerasface.data.identities import IdentityIndex
from kerasface.data.lfw import parse_pairs
from kerasface.models import with_projection
from kerasface.presets import CLASSIFY_PRESETS, get_classify_preset
from kerasface.training import teacher_cache
from kerasface.training.tasks.classify import ClassifyTask, build_training_model, train_classifier
from kerasface.training.teacher_cache import (
    CACHE_NAME,
    PARTS_NAME,
    cache_fingerprint,
    load_embedding_teacher,
    teacher_embeddings,
)

STUDENT, TEACHER, DIM = 32, 48, 16


def _central(img, fraction, size):
    h, w = img.shape[:2]
    side = int(round(min(h, w) * fraction))
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(img[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def chips(tmp_path_factory, sample_dir):
    """``(student folder, teacher folder, relative paths)``: JPEG chips under identical relative paths."""
    root = tmp_path_factory.mktemp("chips")
    index = IdentityIndex.from_source(sample_dir)
    read = index.reader()
    rels = index.paths(range(len(index)))
    for rel in rels:
        img = cv2.imdecode(np.frombuffer(read(rel), np.uint8), cv2.IMREAD_COLOR)
        for folder, fraction, size in (("student", 0.5, STUDENT), ("teacher", 0.6, TEACHER)):
            out = root / folder / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), _central(img, fraction, size), [cv2.IMWRITE_JPEG_QUALITY, 95])
    shutil.copy(Path(sample_dir) / "pairsVal.txt", root / "student" / "pairsVal.txt")
    return root / "student", root / "teacher", rels


def tiny_student(dim: int = 32) -> keras.Model:
    """A small convolutional embedding model (quick to trace on a loaded CPU)."""
    x = keras.Input((STUDENT, STUDENT, 3))
    y = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="stem_conv")(x)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.Conv2D(32, 3, strides=2, activation="relu", name="stage1_conv")(y)
    y = keras.layers.GlobalAveragePooling2D(name="stage1_pool")(y)
    return keras.Model(x, keras.layers.Dense(dim, name="embedding")(y), name="tiny_student")


def tiny_teacher(path: Path, seed: int) -> Path:
    keras.utils.set_random_seed(seed)
    x = keras.Input((TEACHER, TEACHER, 3))
    y = keras.layers.Conv2D(12, 5, strides=2, activation="relu")(x)
    y = keras.layers.Conv2D(24, 3, strides=2, activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    keras.Model(x, keras.layers.Dense(DIM)(y), name=f"teacher{seed}").save(path)
    return path


def by_hand(model_path: Path, folder: Path, rels: list[str], mirror: bool = False) -> np.ndarray:
    """The teacher's unit embeddings computed here: cv2 read, RGB, (x - 127.5) / 128, the model."""
    model = keras.saving.load_model(model_path)
    imgs = np.stack([cv2.cvtColor(cv2.imread(str(folder / r)), cv2.COLOR_BGR2RGB) for r in rels]).astype(np.float32)
    if mirror:
        imgs = imgs[:, :, ::-1]
    e = keras.ops.convert_to_numpy(model((imgs - 127.5) / 128.0)).astype(np.float64)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def test_cached_teacher_embeddings_equal_recomputed_ones_and_follow_the_teacher(chips, tmp_path):
    _, teacher_dir, rels = chips
    rels = rels[:40] + ["Nobody/Nobody_0001.jpg"]  # the last has no chip
    first = tiny_teacher(tmp_path / "t1.keras", 1)
    cache = tmp_path / "run"
    values, ok, stats = teacher_embeddings(load_embedding_teacher(first), rels, teacher_dir, cache_dir=cache,
                                           mirrors=True, save_every=16)
    assert values.shape == (41, 2, DIM) and ok[:40].all() and not ok[40] and not values[40].any()
    assert stats["computed"] == 41 and stats["reused"] == 0 and stats["missing"] == 1
    np.testing.assert_allclose(values[:40, 0], by_hand(first, teacher_dir, rels[:40]), atol=1e-5)
    np.testing.assert_allclose(values[:40, 1], by_hand(first, teacher_dir, rels[:40], mirror=True), atol=1e-5)
    assert (cache / f"{CACHE_NAME}.npy").is_file()
    meta = json.loads((cache / f"{CACHE_NAME}.json").read_text())
    assert meta["paths"] == rels and meta["fingerprint"]["views"] == 2

    # the same teacher again (reloaded): everything from the cache, the same values; a subset in another order too
    again, ok2, stats2 = teacher_embeddings(load_embedding_teacher(first), rels[::-1], teacher_dir, cache_dir=cache,
                                            mirrors=True)
    assert stats2["reused"] == 41 and stats2["computed"] == 0
    np.testing.assert_array_equal(again[::-1], values)
    np.testing.assert_array_equal(ok2[::-1], ok)

    # another teacher (other weights) in the same run folder: the cache is stale, everything is recomputed
    second = tiny_teacher(tmp_path / "t2.keras", 2)
    other, _, stats3 = teacher_embeddings(load_embedding_teacher(second), rels, teacher_dir, cache_dir=cache,
                                          mirrors=True)
    assert stats3["reused"] == 0 and stats3["computed"] == 41
    np.testing.assert_allclose(other[:40, 0], by_hand(second, teacher_dir, rels[:40]), atol=1e-5)
    assert np.abs(other[:40] - values[:40]).max() > 1e-2
    # and without mirrors the fingerprint differs too (other views)
    _, _, stats4 = teacher_embeddings(load_embedding_teacher(second), rels, teacher_dir, cache_dir=cache)
    assert stats4["reused"] == 0


def old_format_cache(folder: Path, fingerprint: dict, paths: list[str], values: np.ndarray, ok) -> None:
    """The cache as the code before parts wrote it (and a run killed while embedding left it): the rows so far
    in one ``.npy``, their paths, ``ok`` and the fingerprint in the ``.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{CACHE_NAME}.npy", np.asarray(values, np.float32), allow_pickle=False)
    (folder / f"{CACHE_NAME}.json").write_text(json.dumps({"fingerprint": fingerprint, "paths": list(paths),
                                                           "ok": [bool(v) for v in ok]}, indent=2) + "\n")


class Killed(Exception):
    pass


def counting_embedder(monkeypatch, kill_at_call: int | None = None) -> list[int]:
    """Wrap the cache's ``embed_crops``: the sizes of the batches it was given (mirrors included); with
    ``kill_at_call`` the call of that number raises :class:`Killed` (a run killed mid-way)."""
    sizes, real = [], teacher_cache.embed_crops

    def embed(model, crops, batch_size):
        if kill_at_call is not None and len(sizes) == kill_at_call:
            raise Killed
        sizes.append(len(crops))
        return real(model, crops, batch_size)

    monkeypatch.setattr(teacher_cache, "embed_crops", embed)
    return sizes


def test_killed_cache_computation_resumes_from_its_parts_and_ends_in_the_old_format(chips, tmp_path, monkeypatch):
    _, teacher_dir, rels = chips
    rels = rels[:40] + ["Nobody/Nobody_0001.jpg"]
    model = tiny_teacher(tmp_path / "t.keras", 5)
    teacher = load_embedding_teacher(model)
    ref, ref_ok, _ = teacher_embeddings(teacher, rels, teacher_dir, mirrors=True, save_every=8)  # no cache
    cache = tmp_path / "run"
    with monkeypatch.context() as m:  # killed while embedding the 4th chunk of 8 (each chunk: faces, mirrors)
        counting_embedder(m, kill_at_call=7)
        with pytest.raises(Killed):
            teacher_embeddings(teacher, rels, teacher_dir, cache_dir=cache, mirrors=True, save_every=8)
    assert len(list((cache / PARTS_NAME).glob("part-*.json"))) == 3 and not (cache / f"{CACHE_NAME}.npy").exists()

    sizes = counting_embedder(monkeypatch)
    values, ok, stats = teacher_embeddings(load_embedding_teacher(model), rels, teacher_dir, cache_dir=cache,
                                           mirrors=True, save_every=8)
    assert stats["reused"] == 24 and stats["computed"] == 17 and sum(sizes) == 2 * 17  # the parts not redone
    np.testing.assert_allclose(values, ref, atol=1e-6)
    np.testing.assert_array_equal(ok, ref_ok)
    # merged once into the two files of the old format (rows in the order asked for), the parts gone
    assert not (cache / PARTS_NAME).exists()
    saved = io.BytesIO()
    np.save(saved, values, allow_pickle=False)
    assert (cache / f"{CACHE_NAME}.npy").read_bytes() == saved.getvalue()
    meta = json.loads((cache / f"{CACHE_NAME}.json").read_text())
    fingerprint = cache_fingerprint(teacher, teacher_dir, 2)
    assert meta == {"fingerprint": fingerprint, "paths": rels, "ok": ok.tolist()}

    # a cache of the old format, as a run of the code before parts left it when killed after 20 images, is
    # reused by a resume: only the other rows are computed
    old = tmp_path / "old_run"
    old_format_cache(old, fingerprint, rels[:20], ref[:20], ref_ok[:20])
    sizes.clear()
    resumed, _, stats = teacher_embeddings(teacher, rels, teacher_dir, cache_dir=old, mirrors=True, save_every=8)
    assert stats["reused"] == 20 and stats["computed"] == 21 and sum(sizes) == 2 * 21
    np.testing.assert_allclose(resumed, ref, atol=1e-6)
    assert json.loads((old / f"{CACHE_NAME}.json").read_text())["paths"] == rels


def test_a_kill_while_the_cache_is_merged_never_pairs_rows_with_other_paths(chips, tmp_path, monkeypatch):
    _, teacher_dir, rels = chips
    model = tiny_teacher(tmp_path / "t.keras", 6)
    teacher = load_embedding_teacher(model)
    first, second = rels[:12], rels[12:24]
    ref, _, _ = teacher_embeddings(teacher, second, teacher_dir, mirrors=False)
    cache = tmp_path / "run"
    teacher_embeddings(teacher, second, teacher_dir, cache_dir=cache, save_every=4)  # a complete cache of 12 rows
    real = teacher_cache.write_json

    def killed_on_the_cache_json(path, obj):
        if Path(path).name == f"{CACHE_NAME}.json":
            raise Killed  # the new array is in place, its .json not yet
        real(path, obj)

    with monkeypatch.context() as m:
        m.setattr(teacher_cache, "write_json", killed_on_the_cache_json)
        with pytest.raises(Killed):
            teacher_embeddings(teacher, first, teacher_dir, cache_dir=cache, save_every=4)
    # the array now holds the rows of `first`; the old .json (12 paths of `second`) must not be read with it
    again, _, stats = teacher_embeddings(teacher, second, teacher_dir, cache_dir=cache, save_every=4)
    assert stats["reused"] == 0
    np.testing.assert_allclose(again, ref, atol=1e-6)


def _cosine_to_teacher(student, student_dir, teacher_values, rels):
    imgs = np.stack([cv2.cvtColor(cv2.imread(str(student_dir / r)), cv2.COLOR_BGR2RGB) for r in rels])
    e = keras.ops.convert_to_numpy(student((imgs.astype(np.float32) - 127.5) / 128.0)).astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    own = float(np.mean(np.sum(e * teacher_values, axis=1)))
    # per face, beyond the common direction: both sides centred on their mean, own target vs another face's
    ec, tc = e - e.mean(0), teacher_values - teacher_values.mean(0)
    ec /= np.linalg.norm(ec, axis=1, keepdims=True)
    tc /= np.linalg.norm(tc, axis=1, keepdims=True)
    centred_own = float(np.mean(np.sum(ec * tc, axis=1)))
    centred_other = float(np.mean(np.sum(ec * np.roll(tc, 1, axis=0), axis=1)))
    return own, centred_own, centred_other


def test_short_run_lowers_the_distillation_loss_and_raises_heldout_cosine(chips, tmp_path, capsys):
    student_dir, teacher_dir, rels = chips
    teacher = tiny_teacher(tmp_path / "teacher.keras", 3)
    # the starting student, saved, so that "before" is exactly where the run starts (--init-from); it gives
    # 32-d embeddings, the teacher 16-d: the trainer's projection is part of the saved student
    keras.utils.set_random_seed(0)
    start = with_projection(tiny_student(32), DIM)
    assert start.get_layer("distill_projection").units == DIM
    start.save(tmp_path / "start.keras")
    held_names = {n for p in parse_pairs(student_dir / "pairsVal.txt") for n in (p.name1, p.name2)}
    held = [r for r in rels if r.split("/")[0] in held_names]
    target = by_hand(teacher, teacher_dir, held)
    before, before_centred, _ = _cosine_to_teacher(start, student_dir, target, held)

    cfg = ClassifyExperiment(name="distill-test", backbone="tiny_student", data=str(student_dir),
                             image_size=STUDENT, objective="distillation", ce_weight=0.0,
                             embedding_teacher=str(teacher), teacher_data=str(teacher_dir),
                             embedding_distill_weight=1.0, flip=True, init_from=str(tmp_path / "start.keras"),
                             epochs=5, batch_size=32, learning_rate=3e-3, verify_every=0)
    run = train_classifier(cfg, run_dir=tmp_path / "run", verbose=0)
    h = json.loads((run.run_dir / "history.json").read_text())
    assert [k for k in h if k.startswith("loss_")] == ["loss_embedding_distill"]
    assert "accuracy" not in h and "val_accuracy" not in h  # no classifier is trained
    assert h["loss_embedding_distill"][-1] < 0.8 * h["loss_embedding_distill"][0]
    assert h["val_teacher_cosine"][-1] > h["val_teacher_cosine"][0]
    report = json.loads((run.run_dir / "data_report.json").read_text())["teacher"]
    assert report["views"] == 2 and report["computed"] == report["images"] and report["missing"] == 0
    assert (run.run_dir / f"{CACHE_NAME}.npy").is_file()
    assert not (run.run_dir / "classifier.keras").exists()     # no classifier was trained: none is saved

    trained = keras.saving.load_model(run.run_dir / "model.keras")
    assert trained.outputs[0].shape[-1] == DIM
    after, after_centred, other_face = _cosine_to_teacher(trained, student_dir, target, held)
    assert after > before + 0.1, (before, after)
    # it follows each face's own target, not only the mean direction of the teacher's embeddings
    assert after_centred > before_centred + 0.1 and after_centred > other_face + 0.1, \
        (before_centred, after_centred, other_face)

    # `kerasface verify --model RUN_DIR` takes the distilled student's run folder: its face spec says how the
    # faces were prepared (here chips that were not aligned by kerasface: no detection), and the score is the
    # cosine of the saved student's embeddings of the two files
    from kerasface.cli import main

    a, b = (str(student_dir / r) for r in held[:2])
    code = main(["verify", "--model", str(run.run_dir), a, b, "--threshold", "0.5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and (code == 0) == out["same"]
    x = np.stack([cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in (a, b)]).astype("float32")
    e = np.array(trained((x - 127.5) / 128.0, training=False), dtype=np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert out["score"] == pytest.approx(float(e[0] @ e[1]), abs=1e-4)


def test_teacher_targets_follow_the_training_and_heldout_rows_when_chips_are_missing(chips, tmp_path):
    student_dir, teacher_dir, rels = chips
    some_missing = tmp_path / "teacher_chips"
    shutil.copytree(teacher_dir, some_missing)
    for rel in rels[::9]:
        (some_missing / rel).unlink()
    model = tiny_teacher(tmp_path / "t.keras", 7)
    cfg = ClassifyExperiment(name="distill-rows", backbone="tiny_student", data=str(student_dir),
                             image_size=STUDENT, objective="distillation", ce_weight=0.0,
                             embedding_teacher=str(model), teacher_data=str(some_missing),
                             embedding_distill_weight=1.0, flip=True, batch_size=8, verify_every=0)
    task = ClassifyTask(cfg)
    task.settings()
    index, missing = task.split.train, set(rels[::9])
    train_before, held_before = set(index.paths(task.train_rows)), set(index.paths(task.val_rows))
    assert train_before & missing and held_before & missing  # chips go missing on both sides
    (tmp_path / "run").mkdir()
    task.prepare(tmp_path / "run", 0, None)
    train, held = index.paths(task.train_rows), index.paths(task.val_rows)
    assert set(train) == train_before - missing and set(held) == held_before - missing
    assert task.teacher_train.shape == (len(train), 2, DIM) and task.teacher_heldout.shape == (len(held), DIM)
    np.testing.assert_allclose(task.teacher_train[:, 0], by_hand(model, some_missing, train), atol=1e-5)
    np.testing.assert_allclose(task.teacher_train[:, 1], by_hand(model, some_missing, train, mirror=True), atol=1e-5)
    np.testing.assert_allclose(task.teacher_heldout, by_hand(model, some_missing, held), atol=1e-5)
    # the two tables are parts of one array (no copy of the training rows)
    assert task.teacher_train.base is not None and task.teacher_train.base is task.teacher_heldout.base
    task.close()

    # centred targets (the distill presets): the same rows, centred on the training rows' mean (both views)
    centred = ClassifyTask(cfg.override(embedding_distill_center=True))
    centred.settings()
    (tmp_path / "run2").mkdir()
    for f in (tmp_path / "run").glob(f"{CACHE_NAME}.*"):
        shutil.copy(f, tmp_path / "run2" / f.name)                   # the cache is reused as it is
    centred.prepare(tmp_path / "run2", 0, None)
    views = [by_hand(model, some_missing, train), by_hand(model, some_missing, train, mirror=True)]
    mean = np.concatenate(views).mean(0)
    want = by_hand(model, some_missing, held) - mean
    np.testing.assert_allclose(centred.teacher_heldout, want / np.linalg.norm(want, axis=1, keepdims=True), atol=1e-5)
    assert centred.data_report["teacher"]["targets_centred_on_mean_of_norm"] == pytest.approx(np.linalg.norm(mean),
                                                                                              abs=1e-3)
    centred.close()


def test_presets_and_settings_rules():
    for name, bb in (("distill-sqnxt23v5-1.0", "sqnxt23v5_w1"), ("distill-sqnxt23v5-2.0", "sqnxt23v5_w2"),
                     ("distill-vargfacenet", "vargfacenet")):
        p = CLASSIFY_PRESETS[name]
        assert p.backbone == bb and p.embedding_teacher == "dlib-resnet-v1" and p.embedding_distill_weight > 0
        assert p.ce_weight == 0 and p.flip and p.image_size == 112
        assert p.train_folds == tuple(range(1, 10)) and p.holdout_folds == (10,)
    # SqNxt-23v5's embedding is pooled ReLU features (never negative): its presets project it, so the
    # student can point where the teacher's signed embeddings do; same-size students get none by default
    # ... and regress it from the pooled features without report 002's dropout of 0.2
    for name in ("distill-sqnxt23v5-1.0", "distill-sqnxt23v5-2.0"):
        assert CLASSIFY_PRESETS[name].distill_projection == "always" and CLASSIFY_PRESETS[name].dropout == 0.0
    # every preset runs two cosine cycles (the second measured better for all three students)
    for name in ("distill-sqnxt23v5-1.0", "distill-sqnxt23v5-2.0", "distill-vargfacenet"):
        assert CLASSIFY_PRESETS[name].epochs == 2 * CLASSIFY_PRESETS[name].cycle_epochs
    cfg = CLASSIFY_PRESETS["distill-sqnxt23v5-1.0"].override(teacher_data="chips")
    _, backbone, _ = build_training_model(cfg, 3, teacher_embedding_dim=128)
    assert [layer.rate for layer in backbone.layers if isinstance(layer, keras.layers.Dropout)] == [0.0]
    assert backbone.layers[-1].name == "distill_projection" and backbone.output_shape == (None, 128)
    raw = keras.Model(backbone.inputs[0], backbone.get_layer("embedding").output)
    x = np.random.default_rng(0).normal(size=(4, 112, 112, 3)).astype("float32")
    assert np.asarray(raw(x)).min() >= 0 and np.asarray(backbone(x)).min() < 0
    assert with_projection(raw, 128) is raw and with_projection(raw, 128, always=True).layers[-1].name == \
        "distill_projection"
    with pytest.raises(ValueError, match="--embedding-teacher"):
        get_classify_preset("sqnxt23v5-1.0").override(embedding_distill_weight=1.0)
    with pytest.raises(ValueError, match="--teacher-data needs"):
        get_classify_preset("sqnxt23v5-1.0").override(teacher_data="x")
    with pytest.raises(ValueError, match="objective distillation"):
        get_classify_preset("thinresnet34-amsoftmax").override(embedding_teacher="dlib-resnet-v1")


def test_missing_teacher_data_is_one_clear_line(chips, tmp_path):
    student_dir, _, _ = chips
    teacher = tiny_teacher(tmp_path / "teacher.keras", 4)
    cfg = ClassifyExperiment(name="distill-bad", backbone="tiny_student", data=str(student_dir),
                             image_size=STUDENT, objective="distillation", ce_weight=0.0,
                             embedding_teacher=str(teacher), teacher_data=str(tmp_path / "nope"),
                             embedding_distill_weight=1.0, epochs=1, batch_size=32, verify_every=0)
    with pytest.raises(FileNotFoundError, match="--teacher-data .*nope: not found"):
        train_classifier(cfg, run_dir=tmp_path / "run", verbose=0)



def test_centred_targets_against_a_plain_loop():
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(7, 2, 5)) + [3.0, 0, 0, 0, 0]          # a strong common direction, like dlib's
    values = (raw / np.linalg.norm(raw, axis=-1, keepdims=True)).astype(np.float32)
    values[6, 1] = 0.0                                              # filled below with the training mean
    n_train = 4
    mean = [sum(float(values[i, v, d]) for i in range(n_train) for v in range(2)) / (2 * n_train) for d in range(5)]
    values[6, 1] = np.asarray(mean, np.float32)                     # a held-out view equal to the mean: stays 0
    centred, got_mean = teacher_cache.centred_targets(values, n_train)
    np.testing.assert_allclose(got_mean, mean, atol=1e-6)
    for i in range(7):
        for v in range(2):
            d = [float(values[i, v, k]) - mean[k] for k in range(5)]
            n = sum(x * x for x in d) ** 0.5
            want = [x / n for x in d] if n > 1e-6 else [0.0] * 5
            np.testing.assert_allclose(centred[i, v], want, atol=1e-5)
    assert np.isfinite(centred).all() and not centred[6, 1].any()
    # the training rows' centred (not yet renormalised) embeddings average to zero; pairwise differences kept
    assert np.abs((values[:n_train] - got_mean).reshape(-1, 5).mean(0)).max() < 1e-6
    with pytest.raises(ValueError, match="n_train"):
        teacher_cache.centred_targets(values, 0)


def test_presets_centre_the_teachers_targets():
    for name in ("distill-sqnxt23v5-1.0", "distill-sqnxt23v5-2.0", "distill-vargfacenet"):
        assert CLASSIFY_PRESETS[name].embedding_distill_center is True
    assert ClassifyExperiment(name="x", backbone="resnet18").embedding_distill_center is False
