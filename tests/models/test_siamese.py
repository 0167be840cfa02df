"""SiameseVerifier over the tiny VarGFaceNet at 32x32: outputs, symmetry, weight sharing,
and ``.keras`` round trips in a fresh process (auto and native grouped-conv paths)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerasface.layers import AbsoluteDifference
from kerasface.models import SiameseVerifier, vargfacenet_tiny

SIZE = 32
HIDDEN = 64


def _verifier(implementation="auto"):
    backbone = vargfacenet_tiny(input_shape=(SIZE, SIZE, 3), implementation=implementation)
    return backbone, SiameseVerifier(backbone, hidden_units=HIDDEN)


@pytest.fixture(scope="module")
def verifier():
    keras.utils.set_random_seed(11)
    return _verifier()


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
    b = rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype("float32")
    return a, b


def _predict(model, a, b, training=False):
    return keras.ops.convert_to_numpy(model([a, b], training=training))


def test_output_is_two_class_probabilities(verifier, faces):
    _, model = verifier
    y = _predict(model, *faces)
    assert y.shape == (4, 2) and y.dtype == np.float32
    assert tuple(model.output_shape) == (None, 2)
    assert (y >= 0).all() and (y <= 1).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-6)


def test_swapping_faces_gives_same_output(verifier, faces):
    _, model = verifier
    a, b = faces
    np.testing.assert_allclose(_predict(model, a, b), _predict(model, b, a), rtol=1e-6, atol=1e-6)
    # ...and the pair order inside the batch does not matter either
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(_predict(model, a[perm], b[perm]), _predict(model, a, b)[perm],
                               rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training(verifier, faces):
    _, model = verifier
    a, b = faces
    keras.utils.set_random_seed(1)
    t1, t2 = _predict(model, a, b, True), _predict(model, a, b, True)
    assert not np.allclose(t1, t2)  # dropout(0.5) twice is active when training
    np.testing.assert_array_equal(_predict(model, a, b), _predict(model, a, b))


def test_backbone_weights_are_shared(verifier):
    backbone, model = verifier
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert len(nested) == 1 and nested[0] is backbone
    assert isinstance(model.get_layer("abs_diff"), AbsoluteDifference)
    head = model.get_layer("hidden").weights + model.get_layer("same_prob").weights
    assert len(model.weights) == len(backbone.weights) + len(head) == len(backbone.weights) + 4
    emb = backbone.output_shape[-1]
    head_params = (emb * HIDDEN + HIDDEN) + (HIDDEN * 2 + 2)
    assert model.count_params() == backbone.count_params() + head_params
    ids = {id(v) for v in model.weights}
    assert all(id(v) in ids for v in backbone.weights)


def test_keras_round_trip_in_fresh_process(verifier, faces, tmp_path, fresh_process_predict):
    _, model = verifier
    a, b = faces
    auto_path = tmp_path / "verifier.keras"
    model.save(auto_path)
    want = _predict(model, a, b)

    # The same weights in a model whose grouped convs use the backend's native kernel:
    # loading the auto model's file works only if every path shares one weight layout.
    native_backbone, native = _verifier("native")
    native.load_weights(auto_path)
    for w_auto, w_native in zip(model.weights, native.weights):
        assert w_auto.path == w_native.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(w_auto),
                                      keras.ops.convert_to_numpy(w_native))
    native_pred = _predict(native, a, b)
    np.testing.assert_allclose(native_pred, want, rtol=1e-4, atol=1e-4)
    native_path = tmp_path / "verifier_native.keras"
    native.save(native_path)

    (got_auto, info_auto), (got_native, info_native) = fresh_process_predict(
        [(auto_path, [a, b]), (native_path, [a, b])]
    )
    np.testing.assert_allclose(got_auto, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_native, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_native, native_pred, rtol=1e-5, atol=1e-5)
    assert info_auto["implementations"] == ["auto"]
    assert info_native["implementations"] == ["native"]
    assert info_auto["n_weights"] == info_native["n_weights"] == len(model.weights)
    assert info_auto["name"] == model.name
