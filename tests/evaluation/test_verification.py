"""Scoring pairs of real LFW faces with embedding models, verifiers and triplet graphs; the CLI.

References are computed independently: images decoded with OpenCV here, the
model applied with ``model.predict`` on hand-built NumPy batches, cosine /
L2 in NumPy.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import kerasface  # noqa: F401
from kerasface.data import parse_pairs
from kerasface.data.sources import FolderSource
from kerasface.evaluation import metrics as M
from kerasface.evaluation.baselines import raw_pixels
from kerasface.evaluation.embeddings import extract_embeddings
from kerasface.evaluation.kinds import embedding_submodel, model_kind, verifier_head
from kerasface.evaluation.verification import default_pairs_file, evaluate_pairs, evaluate_to_dir, score_pairs
from kerasface.models import SiameseVerifier
from kerasface.training import VerificationCallback

SIZE = 32


def face(sample_dir, rel, size=SIZE):
    """Independent decode: OpenCV, BGR->RGB, INTER_AREA resize of the whole 250x250 image."""
    img = cv2.imread(str(sample_dir / "lfw" / rel), cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def norm(x):
    return (x.astype(np.float32) - 127.5) / 128.0


@pytest.fixture(scope="module")
def faces(sample_dir, val_pairs):
    rels = list(dict.fromkeys(r for p in val_pairs for r in (p.path1, p.path2)))
    return {r: face(sample_dir, r) for r in rels}


def l2n(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# --- embeddings ----------------------------------------------------------------------------


def test_raw_pixel_cosine_matches_numpy(sample_dir, val_pairs, faces):
    ps = score_pairs(raw_pixels(SIZE), sample_dir, val_pairs, verbose=0)
    assert ps.kind == "embedding" and ps.score_name == "cosine"
    ref = np.array([np.dot(l2n(norm(faces[p.path1]).ravel()), l2n(norm(faces[p.path2]).ravel()))
                    for p in val_pairs])
    np.testing.assert_allclose(ps.scores, ref, atol=1e-5)
    np.testing.assert_array_equal(ps.labels, [p.same for p in val_pairs])
    assert roc_auc_score(ps.labels, ps.scores) == pytest.approx(M.roc_auc(ps.labels, ps.scores))


def test_flip_tta_and_distances_match_numpy(sample_dir, val_pairs, faces, tiny_embedder):
    model = tiny_embedder()
    rels = list(faces)
    x = norm(np.stack([faces[r] for r in rels]))
    e = model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)
    e = dict(zip(rels, l2n(e.astype(np.float64))))
    emb = extract_embeddings(model, sample_dir, rels, flip=True, verbose=0)
    np.testing.assert_allclose(emb.vectors, np.stack([e[r] for r in rels]), atol=1e-5)
    d = np.array([np.linalg.norm(e[p.path1] - e[p.path2]) for p in val_pairs])
    for metric, expect in (("cosine", 1 - d ** 2 / 2), ("l2", -d), ("l2sq", -d ** 2)):
        ps = score_pairs(model, sample_dir, val_pairs, metric=metric, flip=True, verbose=0)
        np.testing.assert_allclose(ps.scores, expect, atol=1e-5, err_msg=metric)
    # Distances are shown as distances: the threshold rule flips and thresholds are positive.
    m = evaluate_pairs(model, sample_dir, val_pairs, metric="l2", flip=True, verbose=0).metrics
    assert m["threshold_rule"] == "same when distance <= threshold" and m["best_threshold"] > 0
    assert m["flip"] is True and "mirror" in m["flip_note"]
    acc = np.mean((d <= m["best_threshold"]) == np.array([p.same for p in val_pairs]))
    assert acc == pytest.approx(m["best_threshold_accuracy"])


def test_wrong_image_size_and_bad_options(sample_dir, val_pairs):
    with pytest.raises(ValueError, match="64x64"):
        extract_embeddings(raw_pixels(64), sample_dir, [val_pairs[0].path1], image_size=32, verbose=0)
    with pytest.raises(ValueError, match="metric"):
        score_pairs(raw_pixels(SIZE), sample_dir, val_pairs, metric="manhattan")
    with pytest.raises(ValueError, match="normalization"):
        score_pairs(raw_pixels(SIZE), sample_dir, val_pairs, normalization="imagenet")


# --- verifier and triplet graph ----------------------------------------------------------------


def test_siamese_verifier_scores_are_its_same_probability(sample_dir, val_pairs, faces, tiny_embedder):
    verifier = SiameseVerifier(tiny_embedder(1), hidden_units=8)
    assert model_kind(verifier) == "verifier"
    ps = score_pairs(verifier, sample_dir, val_pairs, verbose=0)
    a = norm(np.stack([faces[p.path1] for p in val_pairs]))
    b = norm(np.stack([faces[p.path2] for p in val_pairs]))
    ref = verifier.predict([a, b], verbose=0)[:, 1]
    np.testing.assert_allclose(ps.scores, ref, atol=1e-5)
    flipped = score_pairs(verifier, sample_dir, val_pairs, flip=True, verbose=0)
    ref_f = (ref + verifier.predict([a[:, :, ::-1], b[:, :, ::-1]], verbose=0)[:, 1]) / 2
    np.testing.assert_allclose(flipped.scores, ref_f, atol=1e-5)
    m = evaluate_pairs(verifier, sample_dir, val_pairs, verbose=0).metrics
    assert m["accuracy_at_0.5"] == pytest.approx(np.mean((ref >= 0.5) == ps.labels))


def test_other_two_input_models_are_scored_pair_by_pair(sample_dir, val_pairs, faces, tiny_embedder):
    """No SiameseVerifier head (abs_diff ... same_prob): both faces of each pair go through the model."""
    emb = tiny_embedder(6)
    a_in, b_in = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Concatenate()([emb(a_in), emb(b_in)])
    model = keras.Model([a_in, b_in], keras.layers.Dense(2, activation="softmax")(x))
    assert verifier_head(model) is None
    a = norm(np.stack([faces[p.path1] for p in val_pairs]))
    b = norm(np.stack([faces[p.path2] for p in val_pairs]))
    ref = model.predict([a, b], verbose=0)[:, 1]
    np.testing.assert_allclose(score_pairs(model, sample_dir, val_pairs, verbose=0).scores, ref, atol=1e-5)


def test_triplet_graph_uses_its_shared_embedding_model(sample_dir, val_pairs, tiny_embedder):
    emb = tiny_embedder(2)
    ins = [keras.Input((SIZE, SIZE, 3), name=n) for n in ("anchor", "positive", "negative")]
    outs = [emb(x) for x in ins]
    graph = keras.Model(ins, keras.layers.Concatenate()(outs), name="triplet")
    assert model_kind(graph) == "triplet" and embedding_submodel(graph) is emb
    a = score_pairs(graph, sample_dir, val_pairs, verbose=0).scores
    b = score_pairs(emb, sample_dir, val_pairs, verbose=0).scores
    np.testing.assert_array_equal(a, b)


def test_low_light_scoring_matches_the_training_pipeline(sample_dir, val_pairs, tiny_embedder):
    """--low-light evaluation darkens exactly as PairData does for the low-light presets."""
    from kerasface.data import PairData

    verifier = SiameseVerifier(tiny_embedder(3), hidden_units=8)
    data = PairData.from_pairs(val_pairs, sample_dir, size=SIZE, progress=False)
    ref = verifier.predict(data.dataset(batch_size=16, shuffle=False, low_light=True, low_light_seed=7),
                           verbose=0)[:, 1]
    ps = score_pairs(verifier, sample_dir, val_pairs, low_light_seed=7, verbose=0)
    np.testing.assert_allclose(ps.scores, ref, atol=1e-5)
    plain = score_pairs(verifier, sample_dir, val_pairs, verbose=0).scores
    assert np.abs(plain - ps.scores).max() > 1e-4  # the transform did something


# --- accounting of missing and corrupt images ------------------------------------------------


class _ReadCounter(FolderSource):
    """A folder source counting how often each image is read."""

    def __init__(self, root):
        super().__init__(root)
        self.reads = collections.Counter()

    def read_bytes(self, relpath):
        self.reads[relpath] += 1
        return super().read_bytes(relpath)


def test_missing_and_corrupt_images_are_counted(sample_dir, val_pairs, tmp_path, tiny_embedder):
    data = tmp_path / "lfw_copy"
    shutil.copytree(sample_dir / "lfw", data / "lfw")
    gone, bad = val_pairs[0].path1, val_pairs[40].path2
    (data / "lfw" / gone).unlink()
    (data / "lfw" / bad).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    source = _ReadCounter(data / "lfw")
    ps = score_pairs(raw_pixels(SIZE), source, val_pairs, verbose=0)
    # every image decoded once: the corrupt one is named from that decode, not read again
    assert bad in source.reads and set(source.reads.values()) == {1}
    n_missing = sum(gone in (p.path1, p.path2) for p in val_pairs)
    n_bad = sum(bad in (p.path1, p.path2) and gone not in (p.path1, p.path2) for p in val_pairs)
    acc = ps.accounting
    assert acc["requested"] == 60 and acc["missing_pairs"] == n_missing >= 1
    assert acc["missing_names"] == [gone] and acc["missing_images"] == 1
    assert acc["corrupt_pairs"] == n_bad >= 1 and acc["corrupt_names"] == [bad]  # not its good partners
    assert acc["evaluated"] == len(ps.scores) == 60 - n_missing - n_bad
    with pytest.raises(FileNotFoundError, match=gone.split("/")[0]):
        score_pairs(raw_pixels(SIZE), data, val_pairs, on_missing="error", verbose=0)
    # the verifiers' two paths (a SiameseVerifier's head, any other two-input model) name it the same way
    emb = tiny_embedder(4)
    a_in, b_in = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    pairwise = keras.Model([a_in, b_in], keras.layers.Dense(2, activation="softmax")(
        keras.layers.Concatenate()([emb(a_in), emb(b_in)])))
    for verifier in (SiameseVerifier(tiny_embedder(5), hidden_units=8), pairwise):
        source = _ReadCounter(data / "lfw")
        acc = score_pairs(verifier, source, val_pairs, verbose=0).accounting
        assert acc["corrupt_pairs"] == n_bad and acc["corrupt_names"] == [bad]
        assert set(source.reads.values()) == {1}


# --- 10-fold protocol on real faces ------------------------------------------------------------


def test_ten_fold_protocol_on_real_faces(sample_dir, tmp_path):
    """A View-2 style list (10 folds of 9 + 9 pairs) built from the bundled training pairs."""
    lines = (sample_dir / "pairsTrain.txt").read_text().splitlines()[1:]
    same, diff = lines[:90], lines[90:]
    out = ["10\t9"]
    for f in range(10):
        out += same[9 * f:9 * f + 9] + diff[9 * f:9 * f + 9]
    lst = tmp_path / "pairs10.txt"
    lst.write_text("\n".join(out) + "\n")
    res = evaluate_pairs(raw_pixels(SIZE), sample_dir, lst, verbose=0)
    m, ps = res.metrics, res.scores
    assert m["folds"] == 10 and len(m["fold_accuracies"]) == 10
    # Independent per-fold threshold search (loops) on the same scores.
    accs = []
    for f in range(10):
        tr, te = ps.folds != f, ps.folds == f
        cands = np.unique(ps.scores[tr])
        cands = np.r_[cands[0] - 1, (cands[:-1] + cands[1:]) / 2, cands[-1] + 1]
        best = max(cands, key=lambda t: (np.mean((ps.scores[tr] >= t) == ps.labels[tr]), -t))
        accs.append(np.mean((ps.scores[te] >= best) == ps.labels[te]))
    assert m["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert m["accuracy_std"] == pytest.approx(np.std(accs))


# --- report files and the CLI ----------------------------------------------------------------


def test_default_pairs_file(sample_dir, tmp_path):
    assert default_pairs_file(sample_dir) == sample_dir / "pairsVal.txt"
    with pytest.raises(FileNotFoundError, match="--pairs"):
        default_pairs_file(tmp_path)


def _png_ok(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    return img.shape[0] > 200 and img[..., :3].std() > 0.05


def test_evaluate_to_dir_writes_report(sample_dir, val_pairs, tmp_path):
    res = evaluate_to_dir(raw_pixels(SIZE), sample_dir, val_pairs, tmp_path / "ev", n_cases=3, verbose=0)
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["auc"] == pytest.approx(res.metrics["auc"])
    assert m["files"] == {"roc": "roc.png", "cases": "cases.png", "metrics": "metrics.json"}
    assert _png_ok(tmp_path / "ev" / "roc.png") and _png_ok(tmp_path / "ev" / "cases.png")
    assert "accuracy at best threshold" in res.summary()


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kerasface.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_cli_evaluate_saved_model(sample_dir, val_pairs, tmp_path, tiny_embedder):
    model = tiny_embedder(4)
    model.save(tmp_path / "emb.keras")
    p = _cli("evaluate", str(tmp_path / "emb.keras"), "--data", str(sample_dir), "--metric", "l2",
             "--flip", "--cases", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "eval-pairsVal"
    m = json.loads((out / "metrics.json").read_text())
    ref = evaluate_pairs(model, sample_dir, val_pairs, metric="l2", flip=True, verbose=0).metrics
    assert m["auc"] == pytest.approx(ref["auc"], abs=1e-6)
    assert m["eer_percent"] == pytest.approx(ref["eer_percent"], abs=1e-6)
    assert m["pairs_accounting"]["evaluated"] == 60 and m["score"] == "l2" and m["flip"] is True
    assert "ROC AUC" in p.stdout and "TAR @ FAR=0.001" in p.stdout and "unreachable" in p.stdout
    assert (out / "roc.png").is_file() and (out / "cases.png").is_file()


def test_cli_evaluate_run_folder_of_a_model_that_scales_its_own_input(sample_dir, tmp_path, tiny_embedder):
    """A run folder is a model; a model whose first layer is FacePreprocessing gets raw 0..255 pixels."""
    from kerasface.cli import main
    from kerasface.face_spec import FaceSpec
    from kerasface.layers import FacePreprocessing

    inner = tiny_embedder(5)
    x = keras.Input((SIZE, SIZE, 3), name="face")
    spec = FaceSpec(image_size=SIZE, input_scaling="in-model", metric="l2").to_dict()
    model = keras.Model(x, inner(FacePreprocessing(offset=127.5, scale=128.0, spec=spec)(x)))
    (tmp_path / "run").mkdir()
    model.save(tmp_path / "run" / "model.keras")
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(sample_dir), "--metric", "l2",
                 "--cases", "0", "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["normalization"] == "raw"
    # the same as the plain embedder fed kerasface-normalised faces: scaled once, in the model
    ref = evaluate_pairs(inner, sample_dir, parse_pairs(sample_dir / "pairsVal.txt"), metric="l2", verbose=0).metrics
    assert m["auc"] == pytest.approx(ref["auc"], abs=1e-6) and m["eer_percent"] == pytest.approx(ref["eer_percent"])


def test_cli_evaluate_errors(tmp_path, sample_dir, capsys):
    from kerasface.cli import main

    assert main(["evaluate", str(tmp_path / "nope.keras"), "--data", str(sample_dir)]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["evaluate", "raw-pixels", "--data", str(tmp_path / "missing")]) == 2
    assert "--data not found" in capsys.readouterr().err
    assert main(["evaluate", "raw-pixels", "--data", str(tmp_path)]) == 2  # no pairs list there
    assert "--pairs" in capsys.readouterr().err


# --- the training callback -----------------------------------------------------------------


def test_verification_callback_logs_to_history(sample_dir, val_pairs, tiny_embedder):
    from kerasface.data import PairData

    verifier = SiameseVerifier(tiny_embedder(5), hidden_units=8)
    verifier.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train = PairData.from_pairs(parse_pairs(sample_dir / "pairsTrain.txt"), sample_dir, size=SIZE,
                                progress=False).dataset(batch_size=32, seed=0)
    cb = VerificationCallback(sample_dir, val_pairs, every=2, prefix="lfw_")
    hist = verifier.fit(train, epochs=3, callbacks=[cb], shuffle=False, verbose=0).history
    assert [np.isnan(v) for v in hist["lfw_auc"]] == [True, False, False]  # epochs 2 and 3 (last)
    assert [e for e, _ in cb.results] == [2, 3]
    final = evaluate_pairs(verifier, sample_dir, val_pairs, verbose=0).metrics
    assert hist["lfw_auc"][-1] == pytest.approx(final["auc"])
    assert hist["lfw_eer"][-1] == pytest.approx(final["eer_percent"])
    assert hist["lfw_accuracy"][-1] == pytest.approx(final["best_threshold_accuracy"])
    with pytest.raises(ValueError, match="every"):
        VerificationCallback(sample_dir, val_pairs, every=0)
