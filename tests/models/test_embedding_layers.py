"""The layers after a backbone's embedding (kerasface.models.embedding_layers): one projection for the
trainer's student and DistillationModel, float32 under mixed precision, and models / weights saved by the
code before it (a projection Dense without dtype, a list input) still load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.config import ClassifyExperiment
from kerasface.models import DistillationModel, stack_embedding_layers, with_projection
from kerasface.models.embedding_layers import PROJECTION_NAME
from kerasface.training.distribute import Runtime
from kerasface.training.tasks.classify import build_training_model

SIZE, DIM, TEACHER_DIM = 16, 12, 8


def tiny_backbone(name: str = "tiny") -> keras.Model:
    """As the registered backbones: layers in the policy's dtype, a float32 linear embedding."""
    x = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="stem_conv")(x)
    y = keras.layers.GlobalAveragePooling2D(name="stem_pool")(y)
    return keras.Model(x, keras.layers.Dense(DIM, dtype="float32", name="embedding")(y), name=name)


def old_with_projection(backbone: keras.Model, dim: int) -> keras.Model:
    """How the classification trainer appended the projection before: no dtype, the backbone's input list."""
    proj = keras.layers.Dense(int(dim), use_bias=False, name="distill_projection")
    return keras.Model(backbone.inputs, proj(backbone.outputs[0]), name=backbone.name)


def images(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, SIZE, SIZE, 3)).astype(np.float32)


def distill_cfg(**kw) -> ClassifyExperiment:
    return ClassifyExperiment(name="t", backbone="tiny", image_size=SIZE, objective="distillation", ce_weight=0.0,
                              embedding_distill_weight=1.0, embedding_teacher="x", **kw)


def test_mixed_float16_builds_give_float32_embeddings():
    with Runtime(mixed_precision="float16").precision() as policy:
        assert policy == "mixed_float16"
        assert keras.layers.Dense(2).compute_dtype == "float16"  # the policy is on: a plain Dense is float16
        projected = with_projection(tiny_backbone(), TEACHER_DIM)
        stacked = stack_embedding_layers(tiny_backbone(), 3)
        _, trained, _ = build_training_model(distill_cfg(), 1, backbone=tiny_backbone(),
                                             teacher_embedding_dim=TEACHER_DIM)
        beside = DistillationModel(tiny_backbone(), 2, ce_weight=0.0, embedding_distill_weight=1.0,
                                   teacher_embedding_dim=TEACHER_DIM)
        x = images()
        for name, model in (("with_projection", projected), ("stack_embedding_layers", stacked),
                            ("trainer", trained)):
            out = model(x)
            assert model.outputs[0].dtype == "float32" and keras.ops.convert_to_numpy(out).dtype == np.float32, name
        assert [layer.name for layer in trained.layers[-2:]] == ["embedding", PROJECTION_NAME]
        out = beside.distill_projection(beside.backbone(x))
        assert keras.ops.convert_to_numpy(out).dtype == np.float32
        for layer in (projected.get_layer(PROJECTION_NAME), beside.distill_projection):
            assert layer.get_config()["dtype"]["config"]["name"] == "float32" and not layer.use_bias
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_projected_student_saved_by_the_old_code_loads_and_is_kept(tmp_path):
    keras.utils.set_random_seed(1)
    old = old_with_projection(tiny_backbone(), TEACHER_DIM)
    old.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    x = images(seed=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(old(x)),
                               rtol=1e-6, atol=1e-6)
    # --init-from such a model: it already gives the teacher's size, nothing is appended
    assert with_projection(loaded, TEACHER_DIM) is loaded


def test_a_training_backup_written_with_the_old_projection_restores(tmp_path):
    """A run folder's epoch backup (the training model's .weights.h5) of the code before, read by a model the
    trainer builds now: the same layers by name, so a killed run resumes."""
    keras.utils.set_random_seed(2)
    old = DistillationModel(old_with_projection(tiny_backbone(), TEACHER_DIM), 3, ce_weight=0.0,
                            embedding_distill_weight=1.0, teacher_embedding_dim=TEACHER_DIM)
    old.save_weights(tmp_path / "epoch-0001.weights.h5")
    keras.utils.set_random_seed(3)
    new, backbone, _ = build_training_model(distill_cfg(), 3, backbone=tiny_backbone(),
                                            teacher_embedding_dim=TEACHER_DIM)
    x = images(seed=2)
    before = keras.ops.convert_to_numpy(backbone(x))
    new.load_weights(tmp_path / "epoch-0001.weights.h5")
    after = keras.ops.convert_to_numpy(backbone(x))
    np.testing.assert_allclose(after, keras.ops.convert_to_numpy(old.backbone(x)), rtol=1e-6, atol=1e-6)
    assert np.abs(after - before).max() > 1e-3  # the restore changed the weights


@pytest.mark.parametrize("layers", [1, 3])
def test_stack_embedding_layers_keeps_its_layer_names(layers):
    stacked = stack_embedding_layers(tiny_backbone(), layers)
    extra = [layer.name for layer in stacked.layers[len(tiny_backbone().layers):]]
    expected = [name for i in range(2, layers + 1) for name in (f"embedding_relu{i}", f"embedding_{i}")]
    assert extra == expected and stacked.outputs[0].shape[-1] == DIM and stacked.name == "tiny"


def test_a_projected_student_continues_with_its_own_projection_under_always(tmp_path):
    """--init-from a distilled student with --distill-projection always (the SqNxt presets): its projection is
    kept and trained on (a second one would clash by name); a projection of another size is refused."""
    keras.utils.set_random_seed(2)
    student = with_projection(tiny_backbone(), DIM, always=True)
    assert [layer.name for layer in student.layers[-2:]] == ["embedding", PROJECTION_NAME]
    student.save(tmp_path / "student.keras")
    loaded = keras.saving.load_model(tmp_path / "student.keras")
    assert with_projection(loaded, DIM, always=True) is loaded
    _, trained, _ = build_training_model(distill_cfg(distill_projection="always"), 1, backbone=loaded,
                                         teacher_embedding_dim=DIM)
    assert [layer.name for layer in trained.layers].count(PROJECTION_NAME) == 1
    x = images(seed=2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(trained(x)), keras.ops.convert_to_numpy(student(x)),
                               rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=f"already ends in a {DIM}-d {PROJECTION_NAME}"):
        with_projection(loaded, TEACHER_DIM, always=True)
