"""kerasface.recognition: represent / verify / find / embed_tree on real LFW faces, checked against NumPy.

The models are tiny (a Dense layer on 32x32 faces), so each verdict and each ranking is checked
against the same embeddings computed here directly from the JPEGs with OpenCV and NumPy: what the
recognition code must reproduce (crop, scaling, normalisation, metric, threshold). How strong a
model is belongs to the pretrained model's own tests.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import kerasface
from kerasface.data.align import AlignOptions, align_detected, align_images, default_detector
from kerasface.data.lfw import parse_pairs
from kerasface.face_spec import FaceSpec
from kerasface.recognition import gallery as gallery_module
from kerasface.recognition.api import find, represent, verify
from kerasface.recognition.faces import ManyFacesError, NoFaceError
from kerasface.recognition.gallery import checkpoint_path, embed_tree, load_gallery
from kerasface.recognition.loading import load_face_model
from kerasface.recognition.spec import FACE_SPEC_NAME, data_alignment, run_face_spec, spec_of

SIZE = 32  # conftest.FACE_SIZE: the faces of dense_face_model

def _reference_embedding(model: keras.Model, path, center_crop: float = 1.0) -> np.ndarray:
    """The unit embedding computed by hand: OpenCV decode, centred square crop, INTER_AREA resize,
    (x - 127.5) / 128, the Dense weights in NumPy, L2 normalisation."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    side = int(round(min(h, w) * center_crop))
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = cv2.resize(img[y0:y0 + side, x0:x0 + side], (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    dense = next(la for la in model.layers if isinstance(la, keras.layers.Dense))
    kernel, bias = (np.asarray(v, np.float64) for v in dense.get_weights())
    e = ((crop.astype(np.float64) - 127.5) / 128.0).reshape(-1) @ kernel + bias
    return e / np.linalg.norm(e)


@pytest.fixture(scope="module")
def models(tmp_path_factory, dense_face_model):
    folder = tmp_path_factory.mktemp("models")
    plain = dense_face_model()
    plain.save(folder / "plain.keras")
    spec = FaceSpec(SIZE, alignment="none", input_scaling="in-model", threshold=0.25, threshold_source="chosen here")
    in_model = dense_face_model(preprocessing=spec.to_dict())
    in_model.set_weights(plain.get_weights())  # the same Dense: only where the scaling happens differs
    in_model.save(folder / "in_model.keras")
    return {"plain": folder / "plain.keras", "in_model": folder / "in_model.keras", "net": plain}


@pytest.fixture(scope="module")
def val_pairs(sample_dir):
    pairs = parse_pairs(sample_dir / "pairsVal.txt")
    same = [p for p in pairs if p.same][:3]
    different = [p for p in pairs if not p.same][:3]
    root = sample_dir / "lfw"
    return [(root / p.path1, root / p.path2, p.same) for p in same + different]


def test_verify_on_lfw_pairs_matches_numpy(models, val_pairs):
    net = models["net"]
    for a, b, _ in val_pairs:
        ref = float(_reference_embedding(net, a) @ _reference_embedding(net, b))
        for threshold in (ref - 0.01, ref + 0.01):
            r = verify(a, b, models["plain"], threshold=threshold)
            assert r["score"] == pytest.approx(ref, abs=1e-5) and r["distance"] == pytest.approx(1 - ref, abs=1e-5)
            assert r["same"] is r["verified"] is (threshold < ref)
            assert r["metric"] == "cosine" and r["threshold"] == threshold and "given" in r["threshold_source"]
            assert r["faces"][0]["box"] == [0.0, 0.0, 250.0, 250.0] and r["faces"][0]["confidence"] is None


def test_a_model_that_scales_its_own_input_gives_the_same_embeddings(models, val_pairs):
    a, b, _ = val_pairs[0]
    plain = verify(a, b, models["plain"], threshold=0.0)
    own = verify(a, b, models["in_model"])  # its FacePreprocessing layer ships the threshold
    assert own["score"] == pytest.approx(plain["score"], abs=1e-5)
    assert own["threshold"] == 0.25 and own["threshold_source"] == "chosen here"
    assert load_face_model(models["in_model"]).spec.input_scaling == "in-model"


def test_a_model_named_twice_is_loaded_once_until_its_file_changes(tmp_path, dense_face_model):
    path = tmp_path / "m.keras"
    dense_face_model().save(path)
    first = load_face_model(path)
    assert load_face_model(str(path)) is first
    dense_face_model(seed=3).save(path)  # rewritten: read again, with its new weights
    again = load_face_model(path)
    assert again is not first and again.fingerprint != first.fingerprint


def test_verify_needs_a_threshold(models, val_pairs):
    a, b, _ = val_pairs[0]
    with pytest.raises(ValueError, match="ships no decision threshold"):
        verify(a, b, models["plain"])


def test_represent_takes_paths_and_arrays(models, val_pairs):
    a = val_pairs[0][0]
    from_path = represent(a, models["plain"])
    rgb = cv2.cvtColor(cv2.imread(str(a)), cv2.COLOR_BGR2RGB)
    from_array = represent(rgb, models["plain"])
    assert len(from_path) == len(from_array) == 1
    np.testing.assert_allclose(from_path[0]["embedding"], _reference_embedding(models["net"], a), atol=1e-5)
    np.testing.assert_allclose(from_array[0]["embedding"], from_path[0]["embedding"], atol=1e-6)
    assert kerasface.represent is represent and kerasface.verify is verify and kerasface.find is find


def test_spec_of_reads_the_layer_then_the_run_folder_then_the_input(models, tmp_path):
    net = models["net"]
    assert spec_of(net) == FaceSpec(SIZE)  # defaults: centre crop of the whole photo, kerasface scaling, cosine
    run = tmp_path / "run"
    run.mkdir()
    aligned = tmp_path / "aligned"
    aligned.mkdir()
    (aligned / "align_config.json").write_text(json.dumps({"size": 112, "margin": 0.0}))
    verification = {"score": "cosine", "best_threshold": 0.31, "best_threshold_accuracy": 0.7, "pairs": 60}
    (run / "config.json").write_text(json.dumps({"image_size": SIZE, "center_crop": 0.5, "data": str(aligned)}))
    (run / "metrics.json").write_text(json.dumps({"verification": verification}))
    old = spec_of(net, run)  # a run older than face_spec.json: worked out from config.json + metrics.json
    assert (old.alignment, old.center_crop, old.threshold, old.metric) == ("mtcnn", 1.0, 0.31, "cosine")
    assert "60 evaluation pairs" in old.threshold_source
    (run / FACE_SPEC_NAME).write_text(json.dumps(FaceSpec(SIZE, center_crop=0.6, threshold=0.2).to_dict()))
    assert spec_of(net, run).center_crop == 0.6  # face_spec.json wins over config.json
    layer_model = keras.saving.load_model(models["in_model"])
    assert spec_of(layer_model, run).threshold == 0.25  # the model's own layer wins over its run folder
    (run / FACE_SPEC_NAME).write_text(json.dumps(FaceSpec(64).to_dict()))
    with pytest.raises(ValueError, match="takes 32x32 faces but its face spec says 64x64"):
        spec_of(net, run)


def test_run_face_spec_follows_the_data_and_the_metric(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    settings = {"image_size": 112, "center_crop": 0.7, "data": str(photos)}
    spec = run_face_spec(settings, {"score": "l2", "best_threshold": 1.1, "pairs": 8}, metric="l2")
    assert (spec.alignment, spec.center_crop, spec.metric, spec.threshold) == ("none", 0.7, "l2", 1.1)
    # a verifier's probability threshold is no embedding threshold
    assert run_face_spec(settings, {"score": "same_prob", "best_threshold": 0.5}).threshold is None
    # a pack folder of aligned crops names its source folder, which holds align_config.json
    aligned, pack = tmp_path / "aligned", tmp_path / "pack"
    aligned.mkdir()
    pack.mkdir()
    (aligned / "align_config.json").write_text(json.dumps({"size": 112}))
    (pack / "index.json").write_text(json.dumps({"source": str(aligned)}))
    assert data_alignment(pack) == {"size": 112} and data_alignment(photos) is None
    assert run_face_spec(settings | {"data": str(pack)}).alignment == "mtcnn"


def _tree(root: Path, sample_dir: Path) -> dict[str, Path]:
    """A nested tree of LFW photos (plus a text file and a broken JPEG): ``{relative path: original}``."""
    lfw = sample_dir / "lfw"
    layout = {"a/b/one.jpg": lfw / "AJ_Cook" / "AJ_Cook_0001.jpg",
              "a/two.jpg": lfw / "Aaron_Guiel" / "Aaron_Guiel_0001.jpg",
              "c/d/e/three.jpg": lfw / "Abdullah_Gul" / "Abdullah_Gul_0013.jpg",
              "four.jpg": lfw / "Abdullah_Gul" / "Abdullah_Gul_0014.jpg",
              "c/five.jpg": lfw / "AJ_Lamas" / "AJ_Lamas_0001.jpg"}
    for rel, src in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    (root / "notes.txt").write_text("not a photo")
    (root / "c" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return layout


def test_embed_tree_over_a_nested_tree_and_resume(models, sample_dir, tmp_path, monkeypatch, dense_face_model):
    src = tmp_path / "tree"
    layout = _tree(src, sample_dir)
    fm = load_face_model(models["plain"])
    full = embed_tree(src, fm, progress=False)
    assert sorted(full.paths) == sorted(layout) and full.faces == [0] * len(layout)
    for rel, original in layout.items():
        np.testing.assert_allclose(full.embeddings[full.paths.index(rel)],
                                   _reference_embedding(models["net"], original), atol=1e-5)
    assert set(full.skipped) == {"notes.txt", "c/broken.jpg"}
    assert "not an image file" in full.skipped["notes.txt"] and "corrupt" in full.skipped["c/broken.jpg"]

    # a run killed after two photos, then resumed: only the other photos are embedded again
    partial = checkpoint_path(tmp_path / "out.npz")
    calls = []
    real = gallery_module.embed_crops

    def killed_at_third(model, crops):
        calls.append(len(crops))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, crops)

    monkeypatch.setattr(gallery_module, "embed_crops", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        embed_tree(src, fm, checkpoint=partial, every=1, batch_size=1, progress=False)
    assert partial.is_file() and len(load_gallery(partial)) == 2
    calls.clear()
    monkeypatch.setattr(gallery_module, "embed_crops", lambda model, crops: calls.append(len(crops)) or real(model,
                                                                                                            crops))
    resumed = embed_tree(src, fm, checkpoint=partial, every=1, batch_size=1, progress=False)
    assert len(calls) == len(layout) - 2
    assert sorted(resumed.paths) == sorted(full.paths) and set(resumed.skipped) == set(full.skipped)
    order = [resumed.paths.index(p) for p in full.paths]
    np.testing.assert_allclose(resumed.embeddings[order], full.embeddings, atol=1e-6)
    # another model cannot resume this run
    other = load_face_model(dense_face_model(seed=1))
    with pytest.raises(ValueError, match="another model"):
        embed_tree(src, other, checkpoint=partial, progress=False)


def test_gallery_npz_and_csv_round_trip(models, sample_dir, tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    for p in sorted((sample_dir / "lfw" / "Abdullah_Gul").iterdir())[:3]:
        shutil.copy(p, src / p.name)
    fm = load_face_model(models["plain"])
    g = embed_tree(src, fm, progress=False)
    assert g.paths == sorted(p.name for p in src.iterdir())  # a flat folder: the file names are the keys
    back = load_gallery(g.save(tmp_path / "g.npz"))
    assert back.paths == g.paths and back.fingerprint == fm.fingerprint and back.spec == fm.spec
    np.testing.assert_array_equal(back.embeddings, g.embeddings)
    g.save(tmp_path / "g.csv")
    rows = (tmp_path / "g.csv").read_text().splitlines()
    assert rows[0].startswith("path,face,confidence,x1,y1,x2,y2,left_eye_x") and len(rows) == 1 + len(g)
    first = rows[1].split(",")
    np.testing.assert_allclose([float(v) for v in first[-8:]], g.embeddings[0], rtol=1e-6)


def test_find_ranks_the_gallery_like_numpy(models, tmp_path, dense_face_model):
    lfw_tiny = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw_tiny" / "images"
    if not lfw_tiny.is_dir():
        pytest.skip(f"lfw_tiny not available at {lfw_tiny}")
    src = tmp_path / "gallery"
    picked = []
    for person in sorted(lfw_tiny.iterdir())[:4]:
        for p in sorted(person.iterdir())[:2]:
            (src / person.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(p, src / person.name / p.name)
            picked.append(f"{person.name}/{p.name}")
    query = sorted((lfw_tiny / "Ariel_Sharon").iterdir())[5]
    net = models["net"]
    q = _reference_embedding(net, query)
    sims = {rel: float(q @ _reference_embedding(net, src / rel)) for rel in picked}
    expected = sorted(picked, key=lambda rel: -sims[rel])[:4]
    matches = find(query, src, models["plain"], top=4)
    assert [m["path"] for m in matches] == expected and [m["rank"] for m in matches] == [1, 2, 3, 4]
    for m in matches:
        assert m["score"] == pytest.approx(sims[m["path"]], abs=1e-5) and m["same"] is None
    # the same from the .npz of `embed`, with the model it records
    npz = embed_tree(src, load_face_model(models["plain"]), progress=False).save(tmp_path / "g.npz")
    assert [m["path"] for m in find(query, npz, top=4)] == expected
    with pytest.raises(ValueError, match="made by model"):
        find(query, npz, dense_face_model(seed=1))


def test_find_true_identity_first_with_the_pretrained_model(tmp_path):
    """lfw_tiny: 10 people; a gallery of images 1-3 of each, queried with image 4 (not in the gallery)."""
    if importlib.util.find_spec("face_recognition_models") is None:  # its own import needs pkg_resources
        pytest.skip("the face-recognition-models package is not installed")
    pretrained = pytest.importorskip("kerasface.pretrained")
    if "template" not in {f.name for f in dataclasses.fields(AlignOptions)}:
        pytest.skip("this aligner has no dlib face-chip template (AlignOptions.template)")
    lfw_tiny = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw_tiny" / "images"
    if not lfw_tiny.is_dir():
        pytest.skip(f"lfw_tiny not available at {lfw_tiny}")
    model = load_face_model(pretrained.resolve("dlib-resnet-v1"))
    people = sorted(p for p in lfw_tiny.iterdir() if p.is_dir())
    src = tmp_path / "gallery"
    for person in people:
        (src / person.name).mkdir(parents=True)
        for photo in sorted(person.iterdir())[:3]:
            shutil.copy(photo, src / person.name / photo.name)
    gallery = embed_tree(src, model, progress=False)
    assert not gallery.skipped and len(gallery) == 3 * len(people)
    firsts = [find(sorted(person.iterdir())[3], gallery, model, top=1)[0]["path"].split("/")[0]
              for person in people]
    assert firsts == [p.name for p in people]


def test_detected_faces_are_aligned_like_kerasface_align(mtcnn_face_model, sample_dir):
    photo = sample_dir / "lfw" / "AJ_Cook" / "AJ_Cook_0001.jpg"
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    [face] = represent(photo, mtcnn_face_model)
    ref = align_images([rgb], AlignOptions(size=SIZE))[0]
    assert face["confidence"] == pytest.approx(ref.face.confidence) and face["confidence"] >= 0.9
    np.testing.assert_allclose(face["landmarks"], ref.face.landmarks, atol=0.06)
    fm = load_face_model(mtcnn_face_model)
    expected = np.asarray(fm.model(ref.crop[None].astype("float32")))[0]
    np.testing.assert_allclose(face["embedding"], expected / np.linalg.norm(expected), atol=1e-5)


class _CountingDetector:
    """The real MTCNN, counting its calls and the images of each."""

    def __init__(self):
        self.inner, self.batches = default_detector(), []

    def __call__(self, images):
        self.batches.append(len(images))
        return self.inner(images)


def test_verify_detects_both_photos_in_one_detector_call(mtcnn_face_model, val_pairs):
    a, b, _ = val_pairs[-1]  # a different-people pair
    detector = _CountingDetector()
    r = verify(a, b, mtcnn_face_model, detector=detector)
    assert detector.batches == [2]
    # the reference: the same batch through the detector directly, each photo aligned as `kerasface align` does
    photos = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in (a, b)]
    found = default_detector()(photos)
    crops = [align_detected(img, faces, AlignOptions(size=SIZE)) for img, faces in zip(photos, found)]
    net = load_face_model(mtcnn_face_model).model
    e = [np.asarray(net(c.crop[None].astype("float32")), np.float64)[0] for c in crops]
    assert r["score"] == pytest.approx(float(e[0] @ e[1] / np.linalg.norm(e[0]) / np.linalg.norm(e[1])), abs=1e-5)
    for face, c in zip(r["faces"], crops):
        np.testing.assert_allclose(face["box"], c.face.box, atol=0.06)
        assert face["confidence"] == pytest.approx(c.face.confidence)


def test_several_faces_and_no_face(mtcnn_face_model, detection_samples):
    multi, empty = detection_samples / "multiface.jpg", detection_samples / "no-faces.jpg"
    faces = represent(multi, mtcnn_face_model, all_faces=True)
    assert len(faces) >= 2 and all(f["confidence"] >= 0.9 for f in faces)
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    [largest] = represent(multi, mtcnn_face_model)  # --pick largest (the default)
    np.testing.assert_allclose(largest["embedding"], faces[0]["embedding"], atol=1e-5)
    with pytest.raises(ManyFacesError, match=f"multiface.jpg: {len(faces)} faces found"):
        represent(multi, mtcnn_face_model, pick="only")
    with pytest.raises(NoFaceError, match="no-faces.jpg: no face found"):
        represent(empty, mtcnn_face_model)
