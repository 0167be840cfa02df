"""FaceSpec validation and the FacePreprocessing layer that carries it inside a saved model."""

import numpy as np
import pytest

from kerasface.face_spec import FaceSpec


def test_spec_round_trip_and_validation():
    spec = FaceSpec(image_size=150, alignment="dlib", input_scaling="in-model", metric="l2",
                    threshold=0.6, threshold_source="LFW pairs.txt folds")
    assert spec.image_size == (150, 150)
    assert FaceSpec.from_dict(spec.to_dict()) == spec
    assert spec.same(0.5) and not spec.same(0.7)
    cos = spec.replace(metric="cosine", threshold=0.3)
    assert cos.same(0.31) and not cos.same(0.29)
    for bad in ({"image_size": 0}, {"image_size": (1, 2, 3)}, {"image_size": 1, "alignment": "x"},
                {"image_size": 1, "input_scaling": "x"}, {"image_size": 1, "metric": "dot"},
                {"image_size": 1, "center_crop": 0.0}):
        with pytest.raises(ValueError):
            FaceSpec(**bad)
    with pytest.raises(ValueError, match="unknown"):
        FaceSpec.from_dict({"image_size": [2, 2], "colour": 1})
    with pytest.raises(ValueError, match="no threshold"):
        FaceSpec(image_size=2).same(0.0)


def test_face_preprocessing_matches_numpy_and_survives_saving(tmp_path):
    import keras

    from kerasface.layers import FacePreprocessing

    spec = FaceSpec(image_size=4, alignment="dlib", input_scaling="in-model", threshold=0.6, metric="l2")
    offset, scale = [122.782, 117.001, 104.298], 256.0
    inp = keras.Input((4, 4, 3), dtype="uint8")
    out = FacePreprocessing(offset=offset, scale=scale, spec=spec.to_dict())(inp)
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(out))
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    expected = ((x.astype(np.float64) - np.array(offset)) / scale).mean(axis=(1, 2))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on
    layer = next(la for la in loaded.layers if isinstance(la, FacePreprocessing))
    assert FaceSpec.from_dict(layer.spec) == spec
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-5)
    with pytest.raises(ValueError, match="scale"):
        FacePreprocessing(scale=0.0)
