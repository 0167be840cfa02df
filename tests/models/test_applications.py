"""keras.applications backbones (report 003's other trials): parameter counts against Keras's published figures,
the input adapter, and ``--pretrained imagenet`` failing offline with one clear line."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.config import ClassifyExperiment
from kerasface.models import build_backbone
from kerasface.models.applications import APPLICATIONS, keras_application

# keras.io/api/applications: parameters of each model *with* its 1000-way top, in millions
PUBLISHED_M = {"resnet50": 25.6, "efficientnet_b0": 5.3, "efficientnet_v2_m": 54.4}
TOP_INPUTS = {"resnet50": 2048, "efficientnet_b0": 1280, "efficientnet_v2_m": 1280}


@pytest.mark.parametrize("kind", sorted(APPLICATIONS))
def test_counts_match_the_published_figures(kind):
    _, _, no_top = APPLICATIONS[kind]
    c = TOP_INPUTS[kind]
    assert round((no_top + c * 1000 + 1000) / 1e6, 1) == PUBLISHED_M[kind]
    model = build_backbone(kind, input_shape=(32, 32, 3))
    adapter = 12 if kind == "resnet50" else 0  # the frozen caffe 1x1 conv
    assert model.count_params() == no_top + adapter + c * 512 + 512
    assert model.output_shape == (None, 512) and model.get_layer("embedding").units == 512


def test_resnet50_sees_caffe_inputs():
    model = keras_application("resnet50", input_shape=(32, 32, 3))
    adapter = keras.Model(model.input, model.get_layer("caffe_preprocess").output)
    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype(np.float32)
    got = keras.ops.convert_to_numpy(adapter((rgb - 127.5) / 128.0))
    np.testing.assert_allclose(got, rgb[..., ::-1] - np.array([103.939, 116.779, 123.68]), atol=1e-3)
    assert not model.get_layer("caffe_preprocess").trainable


def test_pretrained_offline_fails_with_one_line(monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, *args, **kwargs):
        raise Exception(f"URL fetch failure on https://storage.googleapis.com/.../{fname}: None -- no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError) as err:
        keras_application("efficientnet_b0", input_shape=(32, 32, 3), weights="imagenet")
    msg = str(err.value)
    assert "--pretrained imagenet" in msg and "efficientnetb0_notop.h5" in msg and "\n" not in msg


def test_pretrained_needs_an_application_backbone():
    from kerasface.training.tasks.classify import build_training_model

    cfg = ClassifyExperiment(name="x", backbone="resnet18", image_size=32, pretrained="imagenet")
    with pytest.raises(ValueError, match="--pretrained imagenet: backbone resnet18"):
        build_training_model(cfg, num_classes=3)
    with pytest.raises(ValueError, match="pretrained"):
        ClassifyExperiment(name="x", pretrained="vggface")


def test_linear_or_stacked_embedding_head():
    """Report 003: one linear layer before the classifier (its choice) against a stack of several."""
    from kerasface.training.tasks.classify import build_training_model

    one = ClassifyExperiment(name="x", backbone="resnet18", image_size=32, head="softmax")
    three = one.override(embedding_layers=3)
    _, b1, _ = build_training_model(one, num_classes=4)
    _, b3, _ = build_training_model(three, num_classes=4)
    dense1 = [la.name for la in b1.layers if isinstance(la, keras.layers.Dense)]
    dense3 = [la.name for la in b3.layers if isinstance(la, keras.layers.Dense)]
    assert dense1 == ["embedding"] and dense3 == ["embedding", "embedding_2", "embedding_3"]
    assert b3.count_params() == b1.count_params() + 2 * (512 * 512 + 512) and b3.output_shape == (None, 512)
