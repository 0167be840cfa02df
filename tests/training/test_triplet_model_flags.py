"""Report 004's fixes as trainer settings: no final L2 layer, max instead of L2 pooling, BN on/off (or LRN, or
neither), and the distance epsilon it printed (sqrt(1e-7) = 3.1622776e-04, Keras's K.epsilon())."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.config import TripletExperiment
from kerasface.layers import L2Normalize, L2Pooling2D, LocalResponseNormalization
from kerasface.presets import TRIPLET_PRESETS
from kerasface.training.tasks.triplet_model import build_embedding_model, compile_triplet


def _kinds(model):
    return {type(layer) for layer in model.layers}


@pytest.mark.parametrize("norm, l2_pooling, l2_normalize", [("batch", True, True), ("none", False, False),
                                                            ("lrn", True, False)])
def test_flags_reach_the_nn2_graph(norm, l2_pooling, l2_normalize):
    cfg = TripletExperiment(name="t", image_size=32, norm=norm, l2_pooling=l2_pooling, l2_normalize=l2_normalize)
    kinds = _kinds(build_embedding_model(cfg))
    assert any(issubclass(k, keras.layers.BatchNormalization) for k in kinds) == (norm == "batch")
    assert (LocalResponseNormalization in kinds) == (norm == "lrn")
    assert (L2Pooling2D in kinds) == l2_pooling
    assert (L2Normalize in kinds) == l2_normalize


def test_other_backbone_without_the_l2_layer():
    cfg = TripletExperiment(name="t", backbone="resnet18", image_size=32, l2_normalize=False, embedding_dim=16)
    model = build_embedding_model(cfg)
    assert L2Normalize not in _kinds(model) and model.output_shape == (None, 16)


def test_distance_epsilon_gives_the_printed_collapse_value():
    """Identical embeddings: d = sqrt(max(0, eps)); with Keras's 1e-7 that is the 3.1622776e-04 of the slides."""
    cfg = TripletExperiment(name="t", image_size=32, distance_epsilon=1e-7)
    inp = keras.Input((32, 32, 3))
    constant = keras.Model(inp, keras.layers.Dense(4, kernel_initializer="zeros")(keras.layers.Flatten()(inp)))
    _, triplet = compile_triplet(cfg, constant)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    d = keras.ops.convert_to_numpy(triplet.predict([x, x, x], verbose=0))
    np.testing.assert_allclose(d, np.float32(3.1622776e-04), rtol=1e-6)
    assert TripletExperiment(name="t").distance_epsilon == 1e-12


def test_full_set_preset_runs_the_slides_100_epochs():
    assert TRIPLET_PRESETS["facenet-nn2"].epochs == 100 and TRIPLET_PRESETS["facenet-nn2-finetune"].epochs == 100
