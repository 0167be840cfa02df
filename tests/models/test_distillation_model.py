"""DistillationModel: each loss term computed once, frozen teacher, training on real faces, fresh-process loading.

Small functional backbones (two convs; BN momentum 0.5 so that the
inference-mode statistics follow ten training steps) stand in for the
report's networks so that tracing stays cheap; the student is 64x64 and the teacher 48x48 with
another embedding size, so the resize and the distillation projection are
exercised too.
"""

from __future__ import annotations

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerasface.losses import (
    batch_hard_triplet_loss,
    embedding_distillation_loss,
    embedding_l2_loss,
    hard_cross_entropy,
    logit_mse_loss,
    prelogit_norm_loss,
    soft_cross_entropy,
)
from kerasface.models import DistillationModel, Report002Model
from kerasface.models.distillation import LOSS_TERMS

P, K = 4, 4  # identities x images per identity
WEIGHTS = {"ce_weight": 1.0, "center_weight": 0.3, "prelogit_norm_weight": 0.01, "triplet_weight": 0.7,
           "embedding_l2_weight": 0.05, "soft_ce_weight": 0.5, "hard_ce_weight": 0.2,
           "logit_mse_weight": 0.1, "projected_soft_ce_weight": 0.4, "embedding_distill_weight": 0.4}


def tiny_backbone(size, dim, name):
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(inp)
    x = keras.layers.BatchNormalization(momentum=0.5, name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.BatchNormalization(momentum=0.5, name="conv2_bn")(x)
    x = keras.layers.ReLU(name="conv2_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    out = keras.layers.Dense(dim, name="embedding")(x)
    return keras.Model(inp, out, name=name)


@pytest.fixture(scope="module")
def faces(sample_dir):
    """P identities x K real faces each (identity-major), 64x64, normalised; labels 0..P-1."""
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    people = [d for d in sorted(root.iterdir()) if d.is_dir() and len(list(d.glob("*.jpg"))) >= K][:P]
    assert len(people) == P
    rels = [f"{d.name}/{f.name}" for d in people for f in sorted(d.glob("*.jpg"))[:K]]
    images, ok = load_images(root, rels, size=64, progress=False)
    assert ok.all()
    labels = np.repeat(np.arange(P), K).astype("int32")
    return (images.astype(np.float32) - 127.5) / 128.0, labels


@pytest.fixture(scope="module")
def teacher():
    keras.utils.set_random_seed(10)
    return DistillationModel(tiny_backbone(48, 24, "teacher_net"), num_classes=P, name="teacher")


def make_student(teacher, seed=0, **weights):
    keras.utils.set_random_seed(seed)
    return DistillationModel(tiny_backbone(64, 16, "student_net"), num_classes=P, teacher=teacher,
                          center_alpha=0.5, temperature=3.0, triplet_margin=0.3, **weights)


def independent_terms(model, images, labels):
    """Every term from the standalone functions, outside compute_loss (inference mode)."""
    emb = model.backbone(images, training=False)
    logits = model.classifier(emb)
    small = tf.image.resize(images, (48, 48), method="bilinear")
    t_emb = model.teacher.backbone(small, training=False)
    t_logits = model.teacher.classifier(t_emb)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    centers = tf.gather(model.center_loss.centers, labels) if model.center_loss is not None else None
    unit = emb / tf.norm(emb, axis=1, keepdims=True)
    proj = model.distill_projection(emb) if model.distill_projection is not None else emb
    return {
        "ce": float(ce),
        "center": None if centers is None else float(0.5 * tf.reduce_mean(tf.reduce_sum((emb - centers) ** 2, 1))),
        "prelogit_norm": float(prelogit_norm_loss(emb)),
        "triplet": float(batch_hard_triplet_loss(labels, unit, margin=0.3)),
        "embedding_l2": float(embedding_l2_loss(proj, t_emb)),
        "soft_ce": float(soft_cross_entropy(logits, t_logits, 3.0)),
        "projected_soft_ce": float(soft_cross_entropy(model.projection_classifier(model.distill_projection(emb)),
                                                      t_logits, 3.0)),
        "hard_ce": float(hard_cross_entropy(logits, t_logits)),
        "logit_mse": float(logit_mse_loss(logits, t_logits)),
        "embedding_distill": float(embedding_distillation_loss(proj, t_emb, "cosine")),
    }


def copy_state(src, dst):
    dst.classifier.set_weights(src.classifier.get_weights())
    if dst.distill_projection is not None:
        dst.distill_projection.set_weights(src.distill_projection.get_weights())
    if dst.projection_classifier is not None:
        dst.projection_classifier.set_weights(src.projection_classifier.get_weights())
    if dst.center_loss is not None:
        dst.center_loss.centers.assign(src.center_loss.centers)


def test_each_term_once(faces, teacher):
    images, labels = faces
    full = make_student(teacher, **WEIGHTS)
    assert full.distill_projection is not None and full.distill_projection.units == 24
    full.center_loss.centers.assign(np.random.default_rng(0).normal(size=(P, 16)).astype("float32"))
    ref = independent_terms(full, images, labels)
    assert all(v > 1e-4 for v in ref.values()), ref  # every term is non-trivial here
    x = {"image": images, "label": labels}

    total = float(full.compute_loss(x, labels, full(x, training=False), training=False))
    want = sum(WEIGHTS[arg] * ref[term] for term, arg in LOSS_TERMS.items())
    assert total == pytest.approx(want, rel=1e-4)  # a term added twice (or missed) breaks this
    tracked = {m.name: float(m.result()) for m in full.metrics if m.name.startswith("loss_")}
    assert set(tracked) == {f"loss_{t}" for t in LOSS_TERMS}
    assert sum(tracked.values()) == pytest.approx(total, rel=1e-5)

    for term, arg in LOSS_TERMS.items():  # one weight on, the others 0: the total is that term
        alone = make_student(teacher, **{a: (WEIGHTS[a] if a == arg else 0.0) for a in WEIGHTS})
        alone.backbone.set_weights(full.backbone.get_weights())
        copy_state(full, alone)
        got = float(alone.compute_loss(x, labels, alone(x, training=False), training=False))
        assert got == pytest.approx(WEIGHTS[arg] * ref[term], rel=1e-4), term
        assert [m.name for m in alone.metrics if m.name.startswith("loss_")] == [f"loss_{term}"]


def test_off_terms_build_nothing_and_teacher_terms_need_a_teacher(teacher):
    plain = DistillationModel(tiny_backbone(64, 16, "plain"), num_classes=P)
    assert plain.center_loss is None and plain.distill_projection is None and plain.teacher is None
    assert [m.name for m in plain.metrics] == ["loss_ce"]
    with pytest.raises(ValueError, match="need a teacher"):
        DistillationModel(tiny_backbone(64, 16, "s"), num_classes=P, soft_ce_weight=1.0)
    with pytest.raises(ValueError, match="classes"):
        DistillationModel(tiny_backbone(64, 16, "s"), num_classes=P + 1, teacher=teacher, soft_ce_weight=1.0)
    with pytest.raises(ValueError):
        DistillationModel(tiny_backbone(64, 16, "s"), num_classes=P, center_weight=-1.0)


def test_the_classifier_trains_only_with_a_term_that_reads_the_logits(teacher):
    for weights, trains in (({"ce_weight": 1.0}, True), ({"ce_weight": 0.0, "soft_ce_weight": 1.0}, True),
                            ({"ce_weight": 0.0, "hard_ce_weight": 1.0}, True),
                            ({"ce_weight": 0.0, "logit_mse_weight": 1.0}, True),
                            ({"ce_weight": 0.0, "center_weight": 1.0, "embedding_l2_weight": 1.0}, False),
                            ({"ce_weight": 0.0, "embedding_distill_weight": 1.0}, False)):
        model = DistillationModel(tiny_backbone(64, 16, "s"), num_classes=P, teacher=teacher, **weights)
        assert model.trains_classifier is trains and model.classifier.trainable is trains, weights


def test_functional_teacher_same_size_and_dim(faces):
    images, labels = faces
    keras.utils.set_random_seed(3)
    inp = keras.Input((64, 64, 3))
    emb = tiny_backbone(64, 16, "fn_teacher_net")(inp)
    teacher = keras.Model(inp, [emb, keras.layers.Dense(P, name="logits")(emb)], name="fn_teacher")
    m = DistillationModel(tiny_backbone(64, 16, "s2"), num_classes=P, teacher=teacher, ce_weight=0.0,
                       embedding_l2_weight=1.0)
    assert m.distill_projection is None and m._teacher_size is None and not teacher.trainable
    x = {"image": images, "label": labels}
    got = float(m.compute_loss(x, labels, m(x, training=False), training=False))
    t_emb, _ = teacher(images, training=False)
    assert got == pytest.approx(float(embedding_l2_loss(m.backbone(images, training=False), t_emb)), rel=1e-5)


def test_hard_mining_and_sample_weight_in_ce(faces):
    images, labels = faces
    keras.utils.set_random_seed(4)
    m = DistillationModel(tiny_backbone(64, 16, "s3"), num_classes=P, hard_mining_fraction=0.25)
    x = {"image": images, "label": labels}
    logits = m(x, training=False)
    per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits).numpy()
    got = float(m.compute_loss(x, labels, logits, training=False))
    assert got == pytest.approx(np.sort(per)[::-1][:4].mean(), rel=1e-5)  # the 4 hardest of 16
    sw = np.linspace(0.0, 2.0, len(labels)).astype("float32")
    plain = DistillationModel(m.backbone, num_classes=P, name="plain_ce")
    plain.classifier.set_weights(m.classifier.get_weights())
    got = float(plain.compute_loss(x, labels, plain(x, training=False), sample_weight=sw, training=False))
    assert got == pytest.approx(np.mean(per * sw), rel=1e-5)


def test_fit_on_real_faces_teacher_frozen_student_learns(faces, teacher):
    images, labels = faces
    m = make_student(teacher, seed=5, hard_mining_fraction=0.75, **WEIGHTS)  # mining traced in a graph too
    m.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    x = {"image": images, "label": labels}
    teacher_before = [w.numpy().copy() for w in teacher.weights]
    student_before = [w.numpy().copy() for w in m.backbone.trainable_weights]
    start = m.evaluate(x, labels, batch_size=len(labels), verbose=0, return_dict=True)
    hist = m.fit(x, labels, batch_size=len(labels), epochs=10, shuffle=False, verbose=0).history
    end = m.evaluate(x, labels, batch_size=len(labels), verbose=0, return_dict=True)

    assert all(np.array_equal(a, w.numpy()) for a, w in zip(teacher_before, teacher.weights))
    assert not teacher.trainable and not any(w.trainable for w in teacher.weights)
    assert {id(w) for w in m.trainable_weights}.isdisjoint({id(w) for w in teacher.weights})
    assert not any(np.array_equal(a, w.numpy()) for a, w in zip(student_before, m.backbone.trainable_weights))
    assert np.abs(m.center_loss.centers.numpy()).sum() > 0  # centres moved from zero while training
    assert set(hist) == {"loss"} | {f"loss_{t}" for t in LOSS_TERMS}
    for epoch in range(10):  # the per-term metrics add up to the loss, epoch by epoch
        parts = sum(hist[f"loss_{t}"][epoch] for t in LOSS_TERMS)
        assert parts == pytest.approx(hist["loss"][epoch], rel=1e-4)
    assert hist["loss"][-1] < hist["loss"][0]
    assert end["loss"] < start["loss"] and end["loss_ce"] < start["loss_ce"]


@pytest.fixture(scope="module")
def old_file(tmp_path_factory):
    """A .keras in the layout the code before the rename wrote: class ``kerasface>Report002Model`` from
    module ``kerasface.models.teacher_student``, student and teacher, every weight non-trivial.

    The deprecated alias keeps the old class name, so it writes the old registered names and weight
    paths; only the module string differs, and it is put back as the old code wrote it."""
    keras.utils.set_random_seed(0)
    with pytest.warns(DeprecationWarning):
        teacher = Report002Model(tiny_backbone(12, 6, "teacher_net"), num_classes=3, name="teacher")
        student = Report002Model(tiny_backbone(16, 4, "student_net"), num_classes=3, teacher=teacher,
                                 center_weight=0.1, embedding_l2_weight=0.1, soft_ce_weight=0.5, name="student")
    rng = np.random.default_rng(0)
    for w in student.weights:  # non-trivial values everywhere (BN statistics, centres, teacher)
        low = 0.5 if "variance" in w.path else -0.5
        w.assign(rng.uniform(low, low + 1.0, w.shape).astype("float32"))
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    saved = tmp_path_factory.mktemp("old") / "saved.keras"
    student.save(saved)
    path = saved.with_name("report002_model.keras")
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "config.json":
                data = data.replace(b'"kerasface.models.distillation"', b'"kerasface.models.teacher_student"')
                assert b"teacher_student" in data
            dst.writestr(item, data)
    expected = {"images": x, "logits": keras.ops.convert_to_numpy(student(x, training=False)),
                "teacher_logits": keras.ops.convert_to_numpy(student.teacher_outputs(x)[1]),
                "centers": student.center_loss.centers.numpy(),
                "projection": student.distill_projection.kernel.numpy()}
    return path, expected


def test_a_file_saved_by_the_old_report002_model_loads(old_file, fresh_process_predict):
    """A .keras written before the rename loads, in a fresh process with the default safe_mode, as the
    deprecated alias with every weight."""
    path, expected = old_file
    ((got, info),) = fresh_process_predict([(path, [expected["images"]])])
    assert info["class"] == "Report002Model"
    np.testing.assert_allclose(got, expected["logits"], rtol=1e-5, atol=1e-6)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, DistillationModel) and isinstance(loaded.teacher, DistillationModel)
    np.testing.assert_allclose(loaded(expected["images"], training=False), expected["logits"], rtol=1e-5, atol=1e-6)
    t_logits = loaded.teacher_outputs(expected["images"])[1]
    np.testing.assert_allclose(t_logits, expected["teacher_logits"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.center_loss.centers.numpy(), expected["centers"])
    np.testing.assert_array_equal(loaded.distill_projection.kernel.numpy(), expected["projection"])


def test_old_class_name_is_a_registered_alias(teacher, tmp_path):
    """Report002Model (deprecated) is a DistillationModel registered under its old name, and round-trips."""
    assert keras.saving.get_registered_name(DistillationModel) == "kerasface>DistillationModel"
    assert keras.saving.get_registered_name(Report002Model) == "kerasface>Report002Model"
    with pytest.warns(DeprecationWarning, match="DistillationModel"):
        old = Report002Model(tiny_backbone(64, 16, "alias_net"), num_classes=P, teacher=teacher, soft_ce_weight=0.5)
    assert isinstance(old, DistillationModel) and old.name == "report002"
    path = tmp_path / "alias.keras"
    old.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is Report002Model and isinstance(loaded.teacher, DistillationModel)
    flat = lambda m: {k: v for k, v in m.get_config().items() if k not in ("backbone", "teacher")}  # noqa: E731
    assert flat(loaded) == flat(old) and flat(loaded)["soft_ce_weight"] == 0.5
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(loaded.weights, old.weights))


def test_save_load_fresh_process(faces, teacher, tmp_path, fresh_process_predict):
    images, labels = faces
    m = make_student(teacher, seed=6, **WEIGHTS)
    rng = np.random.default_rng(7)
    for w in m.non_trainable_weights:  # BN statistics and centres the file must carry
        low = 0.5 if "variance" in w.path else -0.2
        w.assign(rng.uniform(low, low + 0.6, w.shape).astype("float32"))
    m.compile(optimizer="adam", jit_compile=False)
    m.fit({"image": images, "label": labels}, labels, batch_size=8, epochs=1, verbose=0)
    want = keras.ops.convert_to_numpy(m(images, training=False))
    path = tmp_path / "distillation.keras"
    m.save(path)
    ((got, info),) = fresh_process_predict([(path, [images])])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert info["class"] == "DistillationModel" and info["n_weights"] == len(m.weights)

    loaded = keras.saving.load_model(path)  # default safe_mode, no custom_objects
    assert not loaded.teacher.trainable and len(loaded.trainable_weights) == len(m.trainable_weights)
    assert loaded.get_config()["center_weight"] == WEIGHTS["center_weight"]
    np.testing.assert_allclose(loaded.center_loss.centers.numpy(), m.center_loss.centers.numpy())
    emb = loaded.backbone(images, training=False)
    np.testing.assert_allclose(emb, m.backbone(images, training=False), rtol=1e-5, atol=1e-6)
    t_before = [w.numpy().copy() for w in loaded.teacher.weights]
    loaded.fit({"image": images, "label": labels}, labels, batch_size=8, epochs=1, verbose=0)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(t_before, loaded.teacher.weights))
