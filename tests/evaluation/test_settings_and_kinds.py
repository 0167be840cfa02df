"""EvalSettings resolved once, the image source opened once, each kind of model on its own scoring path."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

import kerasface  # noqa: F401
from kerasface.data.sources import ImageSource
from kerasface.evaluation import embeddings as E
from kerasface.evaluation import verification as V
from kerasface.evaluation.baselines import raw_pixels
from kerasface.evaluation.kinds import MODEL_KINDS, embedding_submodel, model_kind, verifier_head
from kerasface.evaluation.settings import EvalSettings
from kerasface.evaluation.verification import (
    evaluate_to_dir,
    score_embedding_pairs,
    score_pairs,
    score_verifier_pairs,
)
from kerasface.models import SiameseVerifier, TripletModel

SIZE = 32


@pytest.fixture(scope="module")
def val_pairs(val_pairs):
    """The first 24 pairs of conftest's val_pairs."""
    return val_pairs[:24]


def test_settings_are_validated_once_and_frozen():
    s = EvalSettings.of(None, flip=True, metric="l2")
    assert s.flip and s.metric == "l2" and s.normalization == "kerasface"
    assert EvalSettings.of(s, batch_size=8) == EvalSettings(flip=True, metric="l2", batch_size=8)
    assert EvalSettings.of(s) is s
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.flip = False  # frozen
    with pytest.raises(ValueError, match="metric"):
        EvalSettings(metric="manhattan")
    with pytest.raises(ValueError, match="normalization"):
        EvalSettings(normalization="imagenet")
    with pytest.raises(ValueError, match="on_missing"):
        EvalSettings(on_missing="ignore")
    with pytest.raises(TypeError, match="flipp"):
        EvalSettings.of(None, flipp=True)
    assert s.report() == {"center_crop": 1.0, "normalization": "kerasface", "flip": True, "low_light_seed": None}


def test_settings_object_and_keywords_score_alike(sample_dir, val_pairs):
    model = raw_pixels(SIZE)
    a = score_pairs(model, sample_dir, val_pairs, metric="l2sq", flip=True, verbose=0)
    b = score_pairs(model, sample_dir, val_pairs, settings=EvalSettings(metric="l2sq", flip=True, verbose=0))
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.settings == b.settings and a.score_name == "l2sq"


def test_a_saved_siamese_verifier_loads_as_a_plain_functional_model_and_keeps_its_fast_path(
        sample_dir, val_pairs, tmp_path, tiny_embedder):
    """SiameseVerifier / TripletModel are builders of functional models: after load_model there is no class
    to dispatch on. The kind comes from the signature (or kind=), the verifier head from its
    AbsoluteDifference layer -- and both survive saving."""
    verifier = SiameseVerifier(tiny_embedder(1), hidden_units=8)
    path = tmp_path / "verifier.keras"
    verifier.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(verifier) and type(loaded).__name__ == "Functional"
    assert model_kind(loaded) == "verifier" and verifier_head(loaded) is not None
    want = score_pairs(verifier, sample_dir, val_pairs, verbose=0).scores
    got = score_verifier_pairs(loaded, sample_dir, val_pairs, EvalSettings(verbose=0))
    np.testing.assert_allclose(got.scores, want, atol=1e-6)
    assert got.kind == "verifier" and got.score_name == "same_prob"
    # without its AbsoluteDifference merge (another two-input structure) the pair-by-pair path gives the same
    a_in, b_in = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    backbone = embedding_submodel(loaded)
    diff = keras.layers.Subtract()([backbone(a_in), backbone(b_in)])
    x = keras.layers.Lambda(lambda t: keras.ops.abs(t))(diff)
    for name in ("dropout1", "hidden", "dropout2", "same_prob"):
        x = loaded.get_layer(name)(x)
    other = keras.Model([a_in, b_in], x)
    assert verifier_head(other) is None
    pairwise = score_verifier_pairs(other, sample_dir, val_pairs, EvalSettings(verbose=0))
    np.testing.assert_allclose(pairwise.scores, got.scores, atol=1e-5)


def test_explicit_kind_picks_the_path(sample_dir, val_pairs, tmp_path, tiny_embedder):
    emb = tiny_embedder(2)
    graph = TripletModel(emb)
    graph.save(tmp_path / "triplet.keras")
    loaded = keras.saving.load_model(tmp_path / "triplet.keras")
    assert model_kind(loaded) == "triplet"
    a = score_pairs(loaded, sample_dir, val_pairs, verbose=0)
    b = score_embedding_pairs(emb, sample_dir, val_pairs, EvalSettings(verbose=0))
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-6)
    assert a.kind == "triplet" and b.kind == "embedding"
    # kind="embedding" on a verifier scores its shared backbone
    verifier = SiameseVerifier(emb, hidden_units=8)
    c = score_pairs(verifier, sample_dir, val_pairs, kind="embedding", verbose=0)
    assert c.kind == "embedding" and c.score_name == "cosine"
    np.testing.assert_allclose(c.scores, b.scores, atol=1e-6)
    with pytest.raises(ValueError, match="verifier model has 2 inputs"):
        score_pairs(emb, sample_dir, val_pairs, kind="verifier", verbose=0)
    with pytest.raises(ValueError, match="kind must be one of"):
        model_kind(emb, "siamese")
    assert MODEL_KINDS == ("embedding", "verifier", "triplet") and embedding_submodel(loaded).name == emb.name


def test_the_image_source_is_opened_once(sample_dir, val_pairs, tmp_path, monkeypatch, tiny_embedder):
    opened = []
    real = V.open_image_source

    def counting(src):
        if not isinstance(src, ImageSource):
            opened.append(src)
        return real(src)

    for module in (V, E):
        monkeypatch.setattr(module, "open_image_source", counting)
    verifier = SiameseVerifier(tiny_embedder(3), hidden_units=8)
    evaluate_to_dir(verifier, sample_dir, val_pairs, tmp_path / "v", n_cases=2, flip=True, verbose=0)
    evaluate_to_dir(raw_pixels(SIZE), sample_dir, val_pairs, tmp_path / "e", n_cases=2, verbose=0)
    assert opened == [sample_dir, sample_dir]  # once per evaluation
