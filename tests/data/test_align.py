"""MTCNN alignment: the similarity estimate, the warp, decoding of odd inputs, face choice,
the resumable ``kerasface align`` runner, and the real MTCNN on real faces.

Core tests use the bundled LFW sample (always present); the detection samples under
``../shared/data/detection_samples`` add the no-face / six-face / crowd photos when present.
The MTCNN network is built once for the module.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from kerasface.cli import main
from kerasface.data.align import (
    ALIGNED,
    ALIGNED_MULTI,
    ARCFACE_TEMPLATE,
    CORRUPT,
    DLIB_TEMPLATE,
    FALLBACK,
    NO_FACE,
    AlignOptions,
    Face,
    MTCNNDetector,
    align_face,
    align_images,
    choose_face,
    decode_for_alignment,
    detect_for_alignment,
    estimate_similarity,
    face_template,
    format_confidence,
    tf_align_fn,
    transform_points,
    warp_face,
)
from kerasface.data.align_run import CONFIG_NAME, REPORT_COLUMNS, REPORT_NAME, align_tree, read_report
from kerasface.data.images import CorruptImageError

REPO = Path(__file__).resolve().parents[2]
SAMPLE_LFW = REPO / "data" / "lfw_sample" / "lfw"
# Four bundled LFW faces, one identity each (all have a single clear face).
LFW_FACES = ["AJ_Cook/AJ_Cook_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
             "Aaron_Guiel/Aaron_Guiel_0001.jpg", "AJ_Lamas/AJ_Lamas_0001.jpg"]


def _rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _similarity(scale, angle_deg, tx, ty) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([scale * r, [[tx], [ty]]])


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    """The real MTCNN (built once for the module)."""
    det = MTCNNDetector()
    det([np.zeros((48, 48, 3), np.uint8)])   # build the network now
    return det


class FakeDetector:
    """Counts calls and images; 'finds' one face on any image with texture, none on a flat image.

    The face's landmarks are the ArcFace template scaled to 40 % of the image and centred, so
    alignment is exercised for real. ``interrupt_on_call=k`` raises KeyboardInterrupt on the k-th
    call (a simulated Ctrl-C / kill in the middle of a run).
    """

    def __init__(self, interrupt_on_call=None):
        self.calls = 0
        self.images = 0
        self.interrupt_on_call = interrupt_on_call

    def __call__(self, images):
        self.calls += 1
        if self.interrupt_on_call is not None and self.calls >= self.interrupt_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.images += len(images)
        out = []
        for img in images:
            if float(img.std()) < 1.0:
                out.append([])
                continue
            h, w = img.shape[:2]
            s = 0.4 * min(h, w) / 112.0
            lm = (ARCFACE_TEMPLATE - 56.0) * s + [w / 2.0, h / 2.0]
            out.append([Face(np.array([w * 0.3, h * 0.3, w * 0.7, h * 0.7]), 0.99, lm)])
        return out


# --------------------------------------------------------------------------- geometry
def test_face_template_sizes_and_margin():
    np.testing.assert_allclose(face_template(112), ARCFACE_TEMPLATE)
    np.testing.assert_allclose(face_template(224), 2 * ARCFACE_TEMPLATE)
    np.testing.assert_allclose(face_template(160), ARCFACE_TEMPLATE * 160 / 112)
    # margin m pads the 112 square by 112*m per side, then scales to `size`
    t = face_template(112, margin=0.25)
    np.testing.assert_allclose(t, (ARCFACE_TEMPLATE + 28) * 112 / 168)
    def eye(p):
        return np.linalg.norm(p[1] - p[0])

    assert eye(t) == pytest.approx(eye(ARCFACE_TEMPLATE) / 1.5)
    # the template's centroid stays at the same relative place in the square
    c0 = ARCFACE_TEMPLATE.mean(0) / 112
    assert np.all(np.abs(face_template(224, 0.2).mean(0) / 224 - 0.5) < np.abs(c0 - 0.5) + 1e-9)
    for bad in ({"size": 8}, {"margin": -0.1}, {"margin": 2.0}):
        with pytest.raises(ValueError):
            face_template(**bad)


def test_estimate_similarity_recovers_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 250, size=(5, 2))
    for scale, angle, tx, ty in [(0.45, 17.0, -30.0, 12.5), (2.5, -120.0, 400.0, -7.0), (1.0, 0.0, 0.0, 0.0)]:
        m = _similarity(scale, angle, tx, ty)
        est = estimate_similarity(src, transform_points(m, src))
        np.testing.assert_allclose(est, m, atol=1e-9)


def test_estimate_similarity_is_least_squares_and_matches_opencv():
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 1.7 + [60, 40] + rng.normal(0, 3, size=(5, 2))
    dst = transform_points(_similarity(0.8, 12.0, 5, -3), src) + rng.normal(0, 1.5, size=(5, 2))
    est = estimate_similarity(src, dst)
    # Independent check 1: a similarity is linear in (a, b, tx, ty) with A = [[a, -b], [b, a]]; solve it by lstsq.
    x, y = src[:, 0], src[:, 1]
    rows = np.zeros((10, 4))
    rows[0::2] = np.stack([x, -y, np.ones(5), np.zeros(5)], 1)
    rows[1::2] = np.stack([y, x, np.zeros(5), np.ones(5)], 1)
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, dst.reshape(-1), rcond=None)
    np.testing.assert_allclose(est, [[a, -b, tx], [b, a, ty]], atol=1e-9)
    # Independent check 2: OpenCV's estimator (all points inliers, refined by Levenberg-Marquardt).
    cv, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    np.testing.assert_allclose(est, cv, atol=1e-3, rtol=1e-3)
    # and it is a minimum: perturbing it increases the squared error
    def err(m):
        return ((transform_points(m, src) - dst) ** 2).sum()

    for d in np.eye(6).reshape(6, 2, 3) * 1e-3:
        assert err(est + d) > err(est) and err(est - d) > err(est)


def test_weighted_estimate_similarity_equals_repeated_points_and_ignores_zero_weights():
    rng = np.random.default_rng(2)
    src = ARCFACE_TEMPLATE * 1.3 + rng.normal(0, 4, size=(5, 2))
    dst = transform_points(_similarity(1.2, -25.0, 7, 3), src) + rng.normal(0, 2, size=(5, 2))
    w = np.array([3, 1, 2, 0, 1])
    # Independent reference: integer weights are the unweighted fit of each point repeated w_i times.
    reps = np.repeat(np.arange(5), w)
    np.testing.assert_allclose(estimate_similarity(src, dst, weights=w), estimate_similarity(src[reps], dst[reps]),
                               atol=1e-9)
    # scaling every weight changes nothing; all ones is the unweighted fit
    np.testing.assert_allclose(estimate_similarity(src, dst, w * 0.37), estimate_similarity(src, dst, w), atol=1e-9)
    np.testing.assert_allclose(estimate_similarity(src, dst, np.ones(5)), estimate_similarity(src, dst), atol=1e-12)
    # a point weighted 0 does not move the fit, however far off it is
    moved = dst.copy()
    moved[3] += [500.0, -300.0]
    np.testing.assert_allclose(estimate_similarity(src, moved, w), estimate_similarity(src, dst, w), atol=1e-9)
    for bad in ([1, 1, 1, 1], [1, -1, 1, 1, 1], [0, 0, 0, 0, 0], [1, np.nan, 1, 1, 1]):
        with pytest.raises(ValueError, match="weights"):
            estimate_similarity(src, dst, weights=bad)


def test_estimate_similarity_never_reflects():
    src = ARCFACE_TEMPLATE.copy()
    mirrored = src * [-1, 1] + [112, 0]           # a reflection fits exactly, a similarity cannot
    m = estimate_similarity(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(np.ones((5, 2)), src)
    with pytest.raises(ValueError):
        estimate_similarity(src[:4], src)


def _blob_image(points, shape, sigma):
    """Float image with a Gaussian blob at each point (x, y)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    img = np.zeros(shape)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def test_dlib_template_sizes_margin_and_options():
    np.testing.assert_allclose(face_template(150, template="dlib"), DLIB_TEMPLATE)
    np.testing.assert_allclose(face_template(300, template="dlib"), 2 * DLIB_TEMPLATE)
    # margin pads dlib's 150 square by 150*m per side, then scales to `size`
    np.testing.assert_allclose(face_template(150, 0.25, "dlib"), (DLIB_TEMPLATE + 37.5) * 150 / 225)
    # dlib's chips frame the face higher than ArcFace's crops (eyes at 0.30 of the side, not 0.46),
    # both roughly symmetric about the vertical midline
    dlib_t, arc_t = face_template(150, template="dlib"), face_template(150)
    assert dlib_t[:2, 1].mean() / 150 < 0.32 < 0.44 < arc_t[:2, 1].mean() / 150
    assert abs(dlib_t[[0, 1, 3, 4], 0].mean() - 74.5) < 2.0
    assert face_template(150) == pytest.approx(face_template(150, template="arcface"))
    with pytest.raises(ValueError, match="template must be one of"):
        face_template(150, template="insightface")
    with pytest.raises(ValueError, match="template must be one of"):
        AlignOptions(template="dlib2")
    opts = AlignOptions(size=150, template="dlib")
    assert opts.as_dict()["template"] == "dlib" and AlignOptions().template == "arcface"


def test_align_options_template_reaches_the_warp():
    lm = transform_points(_similarity(1.3, 10.0, 120.0, 110.0), DLIB_TEMPLATE - 75.0)
    img = _blob_image(lm, (260, 240), sigma=2.5)
    face = Face(np.array([40.0, 30.0, 200.0, 200.0]), 0.99, lm)
    matrices = {}
    for template in ("arcface", "dlib"):
        r = align_images([img], AlignOptions(size=150, template=template),
                         detector=lambda images: [[face] for _ in images])[0]
        assert r.crop.shape == (150, 150, 3)
        np.testing.assert_allclose(r.matrix, estimate_similarity(lm, face_template(150, 0.0, template)), atol=1e-9)
        matrices[template] = r.matrix
    # the landmarks are dlib's template moved by a similarity: the dlib warp puts them exactly on it
    np.testing.assert_allclose(transform_points(matrices["dlib"], lm), DLIB_TEMPLATE, atol=1e-6)
    assert np.abs(matrices["dlib"] - matrices["arcface"]).max() > 1.0


def _centroids(crop, points, r=6):
    out = []
    for x, y in points:
        x0, y0 = int(round(x)) - r, int(round(y)) - r
        win = crop[y0:y0 + 2 * r + 1, x0:x0 + 2 * r + 1].astype(np.float64)
        yy, xx = np.mgrid[y0:y0 + win.shape[0], x0:x0 + win.shape[1]]
        out.append([(win * xx).sum() / win.sum(), (win * yy).sum() / win.sum()])
    return np.array(out)


@pytest.mark.parametrize("scale,angle,size,margin", [(1.0, 25.0, 112, 0.0),     # plain bilinear warp
                                                     (3.2, -15.0, 160, 0.1),    # big face: pre-shrunk with INTER_AREA
                                                     (0.7, 40.0, 224, 0.0)])    # small face, upscaled
def test_warp_face_puts_landmarks_on_the_template(scale, angle, size, margin):
    template = face_template(size, margin)
    # landmarks = the 112 template moved by a known similarity into a larger image
    m = _similarity(scale, angle, 200.0, 150.0)
    lm = transform_points(m, ARCFACE_TEMPLATE - 56.0)
    img = _blob_image(lm, (600, 700), sigma=2.0 * scale)
    crop, matrix = warp_face(img, lm, size=size, margin=margin)
    assert crop.shape == (size, size) and crop.dtype == np.uint8
    np.testing.assert_allclose(transform_points(matrix, lm), template, atol=1e-6)
    # the blobs really are where the template says, in the pixels
    found = _centroids(crop, template, r=max(5, size // 20))
    assert np.abs(found - template).max() < 0.6, found - template


def test_warp_face_outside_image_is_black():
    img = np.full((100, 100, 3), 200, np.uint8)
    lm = ARCFACE_TEMPLATE * 0.5 + [-20, -20]      # face partly off the top-left corner
    crop, _ = warp_face(img, lm)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[-1, -1].tolist() == [200, 200, 200]


# --------------------------------------------------------------------------- decoding
def test_decode_png_rgba_grey_16bit_and_corrupt():
    bgr = cv2.imread(str(SAMPLE_LFW / LFW_FACES[0]))
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    def enc(ext, a):
        return cv2.imencode(ext, a)[1].tobytes()

    img, notes = decode_for_alignment(enc(".png", bgr), "x.png")
    np.testing.assert_array_equal(img, rgb)
    assert notes == []
    img, notes = decode_for_alignment(enc(".png", cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)), "x.png")
    np.testing.assert_array_equal(img, rgb)
    assert notes == ["alpha dropped"]
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    img, notes = decode_for_alignment(enc(".png", grey), "g.png")
    assert img.shape == (*grey.shape, 3) and (img == grey[:, :, None]).all() and notes == ["greyscale"]
    img, notes = decode_for_alignment(enc(".png", bgr.astype(np.uint16) * 257), "d.png")
    assert img.dtype == np.uint8 and np.abs(img.astype(int) - rgb).max() <= 1 and notes == ["16-bit"]
    img, notes = decode_for_alignment(enc(".png", grey.astype(np.uint16) * 257), "g16.png")
    assert notes == ["16-bit", "greyscale"] and img.shape[2] == 3
    # a JPEG whose EXIF says "rotate 90 degrees clockwise" (orientation 6) comes out upright
    tiff = b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack("<I", 0)
    jpeg = enc(".jpg", bgr[:, :200])
    exif = jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(tiff) + 8) + b"Exif\x00\x00" + tiff + jpeg[2:]
    img, _ = decode_for_alignment(exif, "exif.jpg")
    assert img.shape == (200, 250, 3)
    jpeg = (SAMPLE_LFW / LFW_FACES[0]).read_bytes()
    for bad in (b"", b"not an image at all", jpeg[: len(jpeg) // 2], enc(".png", bgr)[:2000]):
        with pytest.raises(CorruptImageError, match="bad.jpg"):
            decode_for_alignment(bad, "bad.jpg")


# --------------------------------------------------------------------------- face choice
def _face(x1, y1, side, conf=0.99):
    box = np.array([x1, y1, x1 + side, y1 + side], float)
    lm = ARCFACE_TEMPLATE * side / 112 + [x1, y1]
    return Face(box, conf, lm)


@pytest.mark.parametrize("value, shown", [(0.89996, "0.8999"), (0.9, "0.9000"), (0.29, "0.2900"),
                                          (0.99999999, "0.9999"), (1.0, "1.0000"), (0.0, "0.0000"),
                                          (0.123456, "0.1234")])
def test_format_confidence_rounds_down(value, shown):
    assert format_confidence(value) == shown
    assert float(shown) <= value  # never above the value: a confidence under a threshold reads under it


def test_choose_face_filters_and_picks():
    big_edge, small_centre = _face(0, 0, 120), _face(180, 180, 40)
    shape = (400, 400, 3)
    f, n, why = choose_face([big_edge, small_centre], shape, AlignOptions(pick="largest"))
    assert f is big_edge and n == 2 and "largest" in why
    f, n, _ = choose_face([big_edge, small_centre], shape, AlignOptions(pick="central"))
    assert f is small_centre
    f, n, _ = choose_face([big_edge, small_centre], shape, AlignOptions(pick="central", min_face_size=50))
    assert f is big_edge and n == 1
    f, _, why = choose_face([_face(0, 0, 100, conf=0.85)], shape, AlignOptions(min_confidence=0.9))
    assert f is None and "confidence >= 0.9" in why and "0.850" in why
    # just under the threshold: never shown as the threshold itself (rounded down, not to nearest)
    f, _, why = choose_face([_face(0, 0, 100, conf=0.89996)], shape, AlignOptions(min_confidence=0.9))
    assert f is None and "(best 0.8999)" in why and "0.9000" not in why
    f, _, why = choose_face([_face(0, 0, 15)], shape, AlignOptions())
    assert f is None and "at least 20 px" in why
    assert choose_face([], shape, AlignOptions())[2] == "no face detected"
    with pytest.raises(ValueError):
        AlignOptions(pick="first")
    with pytest.raises(ValueError):
        AlignOptions(on_no_face="crash")


def test_no_face_skip_or_centre_crop():
    flat = np.full((200, 300, 3), 90, np.uint8)
    fake = FakeDetector()
    crop, lm = align_face(flat, detector=fake)
    assert crop is None and lm is None
    crop, lm = align_face(flat, detector=fake, on_no_face="center", size=160)
    assert crop.shape == (160, 160, 3) and lm is None and (crop == 90).all()
    r = align_images([flat], detector=fake, on_no_face="center")[0]
    assert r.status == FALLBACK and r.reason == "no face detected"
    assert fake.calls == 3


def test_large_images_are_downscaled_for_detection_only():
    seen = []

    def detector(images):
        seen.extend(im.shape for im in images)
        return FakeDetector()(images)

    big = cv2.resize(_rgb(SAMPLE_LFW / LFW_FACES[0]), (3000, 2000))
    small = _rgb(SAMPLE_LFW / LFW_FACES[1])
    faces = detect_for_alignment([big, small], detector, max_side=1024)
    assert seen == [(683, 1024, 3), small.shape]
    # the face found on the 1024 copy is reported in original pixels
    direct = FakeDetector()([big])[0][0]
    np.testing.assert_allclose(faces[0][0].landmarks, direct.landmarks, atol=3)
    np.testing.assert_allclose(faces[0][0].box, direct.box, atol=3)
    # a minimum face size above MTCNN's 20 px shrinks the detection copy so that it maps to 20 px
    seen.clear()
    detect_for_alignment([small], detector, max_side=1024, min_face_size=50)
    assert seen == [(100, 100, 3)]
    r = align_images([big], detector=detector, size=112)[0]
    assert r.status == ALIGNED and r.crop.shape == (112, 112, 3)
    np.testing.assert_allclose(transform_points(r.matrix, r.landmarks), ARCFACE_TEMPLATE, atol=1e-6)


# --------------------------------------------------------------------------- the runner (fake detector)
def _make_tree(root: Path, n_faces: int = 9) -> list[str]:
    """A <identity>/<image> tree: real LFW faces plus a corrupt file and a flat (no-face) image."""
    names = sorted(p.relative_to(SAMPLE_LFW).as_posix() for p in SAMPLE_LFW.glob("*/*.jpg"))[:n_faces]
    for rel in names:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLE_LFW / rel, root / rel)
    (root / "Zz_Bad").mkdir(parents=True)
    (root / "Zz_Bad" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    cv2.imwrite(str(root / "Zz_Bad" / "flat.png"), np.full((120, 100, 3), 77, np.uint8))
    return names + ["Zz_Bad/corrupt.jpg", "Zz_Bad/flat.png"]


def _report(dst: Path) -> dict:
    rows = read_report(dst / REPORT_NAME)
    assert len(rows) == len({r["file"] for r in rows}), "a file is reported twice"
    return {r["file"]: r for r in rows}


def test_align_tree_statuses_report_and_outputs(tmp_path):
    files = _make_tree(tmp_path / "src")
    fake = FakeDetector()
    s = align_tree(tmp_path / "src", tmp_path / "dst", detector=fake, batch_size=4, on_no_face="center",
                   progress=False)
    rows = _report(tmp_path / "dst")
    assert sorted(rows) == sorted(files)
    assert rows["Zz_Bad/corrupt.jpg"]["status"] == CORRUPT and "cannot decode" in rows["Zz_Bad/corrupt.jpg"]["reason"]
    assert rows["Zz_Bad/flat.png"]["status"] == FALLBACK
    assert rows["Zz_Bad/flat.png"]["output"] == "Zz_Bad/flat.jpg"
    assert s.fallback_files == ["Zz_Bad/flat.png"] and s.bad_files == ["Zz_Bad/corrupt.jpg"]
    for rel in files[:-2]:
        r = rows[rel]
        assert r["status"] == ALIGNED and float(r["confidence"]) == pytest.approx(0.99)
        assert len(r["box"].split()) == 4 and len(r["landmarks"].split()) == 10
        out = cv2.imread(str(tmp_path / "dst" / r["output"]))
        assert out.shape == (112, 112, 3)
    assert s.counts[ALIGNED] == 9 and s.counts[FALLBACK] == 1 and s.counts[CORRUPT] == 1
    # 10 decodable images in batches of 4 (the corrupt one never reaches the detector)
    assert fake.images == 10 and s.detector_calls == fake.calls == 3
    header = (tmp_path / "dst" / REPORT_NAME).read_text().splitlines()[0]
    assert header == ",".join(REPORT_COLUMNS)
    assert not list((tmp_path / "dst").glob("*/.*"))      # no temporary files left


def test_align_tree_skip_records_no_face_and_writes_nothing(tmp_path):
    _make_tree(tmp_path / "src", n_faces=1)
    s = align_tree(tmp_path / "src", tmp_path / "dst", detector=FakeDetector(), progress=False)
    rows = _report(tmp_path / "dst")
    assert rows["Zz_Bad/flat.png"]["status"] == NO_FACE and rows["Zz_Bad/flat.png"]["output"] == ""
    assert rows["Zz_Bad/flat.png"]["reason"] == "no face detected"
    assert not (tmp_path / "dst" / "Zz_Bad").exists() or not list((tmp_path / "dst" / "Zz_Bad").iterdir())
    assert s.no_face_files == ["Zz_Bad/flat.png"]


class TwoFaceDetector(FakeDetector):
    """FakeDetector's face (coordinates on a 0.1 px grid, as the report records them) plus a
    smaller second face, so every textured image is an ``aligned_multi`` case."""

    def __call__(self, images):
        out = super().__call__(images)
        return [[Face(np.round(f.box, 1), f.confidence, np.round(f.landmarks, 1)) for f in faces]
                + [Face(np.round(f.box * 0.5, 1), 0.95, np.round(f.landmarks * 0.5, 1)) for f in faces]
                for faces in out]


def test_landmarks_from_rewarps_recorded_faces_without_detecting(tmp_path):
    files = _make_tree(tmp_path / "src", n_faces=5)
    first = tmp_path / "arcface112"
    align_tree(tmp_path / "src", first, detector=TwoFaceDetector(), on_no_face="center", fmt="png", progress=False)
    # the same faces in dlib's 150 chips: from the report, no detector call at all ...
    never = FakeDetector(interrupt_on_call=1)
    s = align_tree(tmp_path / "src", tmp_path / "rewarped", detector=never, landmarks_from=first, template="dlib",
                   size=150, on_no_face="center", fmt="png", progress=False)
    assert never.calls == 0 and s.detector_calls == 0
    # ... equal, byte for byte, to detecting again with the same detector
    direct = align_tree(tmp_path / "src", tmp_path / "direct", detector=TwoFaceDetector(), template="dlib", size=150,
                        on_no_face="center", fmt="png", progress=False)
    assert direct.detector_calls == 1
    re_rows, direct_rows = _report(tmp_path / "rewarped"), _report(tmp_path / "direct")
    for rel in files:
        a, b = re_rows[rel], direct_rows[rel]
        assert (a["status"], a["n_faces"], a["landmarks"], a["output"]) == \
            (b["status"], b["n_faces"], b["landmarks"], b["output"]), rel
        if a["output"]:
            rewarped, direct_crop = tmp_path / "rewarped" / a["output"], tmp_path / "direct" / b["output"]
            assert rewarped.read_bytes() == direct_crop.read_bytes()
    assert re_rows[files[0]]["status"] == ALIGNED_MULTI and re_rows["Zz_Bad/flat.png"]["status"] == FALLBACK
    assert re_rows["Zz_Bad/corrupt.jpg"]["status"] == CORRUPT
    # the config says where the faces came from; resuming without it is refused
    assert json.loads((tmp_path / "rewarped" / CONFIG_NAME).read_text())["landmarks_from"] == str(first.resolve())
    with pytest.raises(ValueError, match="landmarks_from"):
        align_tree(tmp_path / "src", tmp_path / "rewarped", detector=never, template="dlib", size=150,
                   on_no_face="center", fmt="png", progress=False)
    # an image the report does not cover is detected as usual
    lines = (first / REPORT_NAME).read_text().splitlines()
    (first / REPORT_NAME).write_text("\n".join(lines[:-1]) + "\n")
    missing = read_report(tmp_path / "direct" / REPORT_NAME)[-1]["file"]
    assert lines[-1].startswith(missing + ",") and missing != "Zz_Bad/corrupt.jpg"
    counting = TwoFaceDetector()
    align_tree(tmp_path / "src", tmp_path / "partly", detector=counting, landmarks_from=first / REPORT_NAME,
               fmt="png", progress=False)
    assert counting.calls == 1 and counting.images == 1
    with pytest.raises(FileNotFoundError, match="landmarks report not found"):
        align_tree(tmp_path / "src", tmp_path / "x", landmarks_from=tmp_path / "nowhere", progress=False)


def test_align_tree_reads_a_zip(tmp_path):
    import zipfile

    names = LFW_FACES[:3]
    with zipfile.ZipFile(tmp_path / "lfw.zip", "w") as z:
        for rel in names:
            z.write(SAMPLE_LFW / rel, f"lfw/{rel}")
    fake = FakeDetector()
    s = align_tree(tmp_path / "lfw.zip", tmp_path / "dst", detector=fake, fmt="png", progress=False)
    assert s.counts[ALIGNED] == 3 and fake.calls == 1
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").glob("*/*.png")) == \
        sorted(rel.replace(".jpg", ".png") for rel in names)


def test_interrupted_run_resumes_without_redoing(tmp_path):
    files = _make_tree(tmp_path / "src", n_faces=13)       # 15 files, 14 decodable
    dst = tmp_path / "dst"
    with pytest.raises(KeyboardInterrupt):
        align_tree(tmp_path / "src", dst, detector=FakeDetector(interrupt_on_call=3), batch_size=4, progress=False)
    first = _report(dst)
    assert len(first) == 8                                  # two batches of 4 finished before the kill
    stamps = {rel: (dst / r["output"]).stat().st_mtime_ns for rel, r in first.items()}
    # what a kill can leave: a cut-off last report line and a temporary crop file
    with open(dst / REPORT_NAME, "a") as f:
        f.write(f"{files[9]},alig")
    (dst / Path(files[9]).parent).mkdir(parents=True, exist_ok=True)
    stale = dst / Path(files[9]).parent / ".Foo_0001-abc123.jpg"
    stale.write_bytes(b"half")

    again = FakeDetector()
    s = align_tree(tmp_path / "src", dst, detector=again, batch_size=4, progress=False)
    final = _report(dst)
    assert sorted(final) == sorted(files)
    assert s.resumed == 8 and s.processed == 7
    # only the 6 unfinished decodable images went through the detector (the corrupt one is never detected)
    assert again.images == 6 and again.calls == 2
    assert {rel: (dst / first[rel]["output"]).stat().st_mtime_ns for rel in first} == stamps
    assert not stale.exists()
    # a third run has nothing to do
    third = FakeDetector()
    s = align_tree(tmp_path / "src", dst, detector=third, progress=False)
    assert third.calls == 0 and s.processed == 0 and s.resumed == 15


def test_deleted_output_and_error_rows_are_redone(tmp_path):
    _make_tree(tmp_path / "src", n_faces=3)
    dst = tmp_path / "dst"
    align_tree(tmp_path / "src", dst, detector=FakeDetector(), progress=False)
    rows = _report(dst)
    victim = next(r for r in rows.values() if r["status"] == ALIGNED)
    (dst / victim["output"]).unlink()
    fake = FakeDetector()
    align_tree(tmp_path / "src", dst, detector=fake, progress=False)
    assert fake.images == 1 and (dst / victim["output"]).is_file()
    assert len(_report(dst)) == 5


def test_resume_with_other_settings_is_refused(tmp_path):
    _make_tree(tmp_path / "src", n_faces=1)
    align_tree(tmp_path / "src", tmp_path / "dst", detector=FakeDetector(), progress=False)
    with pytest.raises(ValueError, match="size 112 -> 160"):
        align_tree(tmp_path / "src", tmp_path / "dst", detector=FakeDetector(), size=160, progress=False)
    assert (tmp_path / "dst" / CONFIG_NAME).is_file()


def test_cli_align_template_dlib_is_recorded_and_kept_on_resume(tmp_path, monkeypatch, capsys):
    import kerasface.data.align as align_mod

    monkeypatch.setattr(align_mod, "_DEFAULT_DETECTOR", FakeDetector())
    _make_tree(tmp_path / "src", n_faces=1)
    argv = ["align", str(tmp_path / "src"), str(tmp_path / "dst"), "--quiet", "--size", "150"]
    assert main(argv + ["--template", "dlib"]) == 0
    cfg = json.loads((tmp_path / "dst" / CONFIG_NAME).read_text())
    assert cfg["template"] == "dlib" and cfg["size"] == 150
    crops = sorted((tmp_path / "dst").glob("*/*.jpg"))
    assert crops and cv2.imread(str(crops[0])).shape == (150, 150, 3)
    capsys.readouterr()
    assert main(argv) == 2  # resuming with the default (arcface) template is refused
    assert "template 'dlib' -> 'arcface'" in capsys.readouterr().err
    # a folder aligned before templates existed has no "template" in its config: it was arcface
    del cfg["template"]
    (tmp_path / "dst" / CONFIG_NAME).write_text(json.dumps(cfg))
    assert main(argv) == 0


def test_killed_process_leaves_whole_files_and_a_valid_report(tmp_path):
    """SIGKILL a real `align_tree` process mid-run: every crop on disk decodes, the report parses, resume finishes."""
    _make_tree(tmp_path / "src", n_faces=40)
    dst = tmp_path / "dst"
    script = r"""
import sys, time, types, numpy as np
# Skip kerasface/__init__.py (it imports Keras/TensorFlow, which the runner does not need): 5 s saved.
pkg = types.ModuleType("kerasface"); pkg.__path__ = [sys.argv[3]]; sys.modules["kerasface"] = pkg
from kerasface.data.align import ARCFACE_TEMPLATE, Face
from kerasface.data.align_run import align_tree

def slow_detector(images):   # one centred face per image, 0.15 s per image
    time.sleep(0.15 * len(images))
    out = []
    for img in images:
        h, w = img.shape[:2]
        lm = (ARCFACE_TEMPLATE - 56.0) * (0.4 * min(h, w) / 112.0) + [w / 2.0, h / 2.0]
        out.append([] if img.std() < 1 else [Face(np.array([0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h]), 0.99, lm)])
    return out

assert "tensorflow" not in sys.modules
align_tree(sys.argv[1], sys.argv[2], detector=slow_detector, batch_size=2, size=224, fmt="png", progress=False)
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "src"), str(dst), str(REPO / "kerasface")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    report = dst / REPORT_NAME
    while time.monotonic() < deadline and proc.poll() is None:
        if report.is_file() and report.read_text().count("\n") >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = _report(dst)
    assert 7 <= len(rows) < 42
    for p in dst.glob("*/*.png"):
        assert cv2.imread(str(p)).shape == (224, 224, 3), p
    fake = FakeDetector()
    s = align_tree(tmp_path / "src", dst, detector=fake, batch_size=8, size=224, fmt="png", progress=False)
    assert s.resumed == len(rows) and s.total == 42 and len(_report(dst)) == 42
    assert fake.images == 41 - sum(r["status"] != CORRUPT for r in rows.values())


def test_cli_errors_that_stop_the_run(tmp_path, capsys, monkeypatch):
    assert main(["align", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "SRC not found" in err and "missing" in err and "Traceback" not in err
    _make_tree(tmp_path / "src", n_faces=1)
    (tmp_path / "file").write_text("x")
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "file" / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot create DST" in err and "Traceback" not in err
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "src"), "--quiet"]) == 2
    assert "source folder itself" in capsys.readouterr().err
    # Ctrl-C: a plain message and exit status 130, no traceback
    import kerasface.data.align_run as run_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "align_tree", interrupted)
    assert main(["align", str(tmp_path / "src"), str(tmp_path / "out2"), "--quiet"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    if os.geteuid() != 0:     # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert main(["align", str(tmp_path / "src"), str(ro), "--quiet"]) == 2
        assert "not writable" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real MTCNN
def test_real_mtcnn_aligns_lfw_faces_onto_the_template(mtcnn):
    images = [_rgb(SAMPLE_LFW / rel) for rel in LFW_FACES]
    before = mtcnn.calls
    results = align_images(images, detector=mtcnn)
    assert mtcnn.calls == before + 1                          # the whole list in one batched call
    crops = []
    for r in results:
        assert r.status == ALIGNED and r.face.confidence > 0.95
        warped = transform_points(r.matrix, r.landmarks)
        # a least-squares fit of a real face (whose proportions differ from the template's):
        # every point within a few pixels of the template, the eyes closest
        dist = np.linalg.norm(warped - ARCFACE_TEMPLATE, axis=1)
        assert dist.mean() < 6.0 and dist.max() < 9.0 and dist[:2].max() < 5.0, dist
        crops.append(r.crop)
    # Detect again on the aligned crops: MTCNN finds the landmarks where the transform put them.
    for r, faces in zip(results, mtcnn(crops)):
        assert len(faces) >= 1
        again = max(faces, key=lambda f: f.confidence).landmarks
        assert np.abs(again - transform_points(r.matrix, r.landmarks)).max() < 2.5
        assert np.linalg.norm(again - ARCFACE_TEMPLATE, axis=1).mean() < 6.0


def test_real_mtcnn_160_with_margin_and_huge_image(mtcnn):
    img = _rgb(SAMPLE_LFW / LFW_FACES[1])
    crop, lm = align_face(img, detector=mtcnn, size=160, margin=0.1)
    assert crop.shape == (160, 160, 3)
    # the same face in a 3000x3000 upscale: detected on a 1024 copy, warped from the original pixels
    huge = cv2.resize(img, (3000, 3000), interpolation=cv2.INTER_CUBIC)
    crop_h, lm_h = align_face(huge, detector=mtcnn, size=160, margin=0.1)
    assert np.abs(lm_h / 12.0 - lm).max() < 2.0
    assert np.abs(crop_h.astype(float) - crop).mean() < 8.0
    again = max(mtcnn([crop_h])[0], key=lambda f: f.confidence).landmarks
    assert np.linalg.norm(again - face_template(160, 0.1), axis=1).mean() < 7.0


def test_real_mtcnn_large_min_face_size(mtcnn):
    """mtcnn 1.0 loses every face of a batch when asked for min_face_size > 20; the image is shrunk instead."""
    with pytest.raises(ValueError, match="12..20"):
        MTCNNDetector(min_face_size=40)
    images = [_rgb(SAMPLE_LFW / rel) for rel in LFW_FACES]
    ref = align_images(images, detector=mtcnn)
    big_only = align_images(images, detector=mtcnn, min_face_size=40)   # detected on a 125x125 copy
    for a, b in zip(ref, big_only):
        assert b.status == ALIGNED
        diff = np.abs(a.landmarks - b.landmarks)
        assert np.median(diff) < 2.5 and diff.max() < 6.0, diff


def test_real_mtcnn_no_face(mtcnn):
    flat = np.full((250, 250, 3), 128, np.uint8)
    r = align_images([flat], detector=mtcnn, on_no_face="skip")[0]
    assert r.status == NO_FACE and r.crop is None and r.reason == "no face detected"


def test_real_detection_samples(mtcnn, detection_samples):
    names = ["ivan.jpg", "no-faces.jpg", "multiface.jpg", "selfie-many-people.jpg"]
    images = [_rgb(detection_samples / n) for n in names]
    largest = align_images(images, detector=mtcnn, pick="largest", on_no_face="center")
    ivan, none, six, crowd = largest
    assert ivan.status == ALIGNED and ivan.n_faces == 1              # a weaker 0.85 detection is filtered out
    assert none.status == FALLBACK and none.crop.shape == (112, 112, 3) and none.n_faces == 0
    assert six.status == ALIGNED_MULTI and six.n_faces == 6 and six.n_detected == 6
    assert crowd.status == ALIGNED_MULTI and crowd.n_faces >= 4
    # "central" picks another face of the group photo than "largest", the one nearest the centre
    faces = detect_for_alignment([images[2]], mtcnn, 1024)[0]
    central = align_images([images[2]], detector=mtcnn, pick="central")[0]
    centre = np.array([images[2].shape[1] / 2, images[2].shape[0] / 2])
    dist = [np.hypot(*((f.box[:2] + f.box[2:]) / 2 - centre)) for f in faces]
    np.testing.assert_allclose(central.face.box, faces[int(np.argmin(dist))].box)
    assert not np.allclose(central.face.box, six.face.box)
    for r in (ivan, six, crowd, central):
        assert np.linalg.norm(transform_points(r.matrix, r.landmarks) - ARCFACE_TEMPLATE, axis=1).mean() < 6.0


def test_tf_data_step(mtcnn):
    import tensorflow as tf

    data = [(SAMPLE_LFW / rel).read_bytes() for rel in LFW_FACES[:2]] + [b"garbage"]
    ds = tf.data.Dataset.from_tensor_slices(data).map(tf_align_fn(size=160, detector=mtcnn))
    assert ds.element_spec[0].shape == (160, 160, 3)
    out = list(ds.as_numpy_iterator())
    assert [bool(f) for _, f in out] == [True, True, False]
    assert out[2][0].max() == 0
    expect, _ = align_face(_rgb(SAMPLE_LFW / LFW_FACES[0]), detector=mtcnn, size=160)
    # The same detection and warp; the detector runs inside tf.data here, and on some CPUs its
    # landmarks differ in the last float bits, which moves a few warped pixels by one grey level.
    diff = np.abs(out[0][0].astype(int) - expect.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).sum())


def test_cli_align_odd_inputs_and_resume(mtcnn, tmp_path, capsys, monkeypatch):
    """`kerasface align` with the real MTCNN on PNG / RGBA / grey / 16-bit / huge / corrupt / blank inputs."""
    import kerasface.data.align as align_mod

    monkeypatch.setattr(align_mod, "_DEFAULT_DETECTOR", mtcnn)
    src = tmp_path / "src" / "Person"
    src.mkdir(parents=True)
    bgr = cv2.imread(str(SAMPLE_LFW / LFW_FACES[2]))
    shutil.copyfile(SAMPLE_LFW / LFW_FACES[2], src / "a_jpeg.jpg")
    cv2.imwrite(str(src / "b_png.png"), bgr)
    cv2.imwrite(str(src / "c_rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(src / "d_grey.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(src / "e_16bit.png"), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "f_huge.jpg"), cv2.resize(bgr, (2500, 2500)))
    (src / "g_truncated.jpg").write_bytes((SAMPLE_LFW / LFW_FACES[2]).read_bytes()[:3000])
    (src / "h_empty.jpg").write_bytes(b"")
    cv2.imwrite(str(src / "i_blank.jpg"), np.full((250, 250, 3), 200, np.uint8))
    dst = tmp_path / "dst"
    before = mtcnn.images_seen
    assert main(["align", str(tmp_path / "src"), str(dst), "--on-no-face", "center", "--batch-size", "4"]) == 0
    out = capsys.readouterr()
    assert "images/s" in out.err and "9 images" in out.out and "centre-crop fallback: 1: Person/i_blank.jpg" in out.out
    assert mtcnn.images_seen - before == 7
    rows = _report(dst)
    status = {Path(k).name: v["status"] for k, v in rows.items()}
    assert status == {"a_jpeg.jpg": ALIGNED, "b_png.png": ALIGNED, "c_rgba.png": ALIGNED, "d_grey.png": ALIGNED,
                      "e_16bit.png": ALIGNED, "f_huge.jpg": ALIGNED, "g_truncated.jpg": CORRUPT,
                      "h_empty.jpg": CORRUPT, "i_blank.jpg": FALLBACK}
    reason = {Path(k).name: v["reason"] for k, v in rows.items()}
    assert reason["c_rgba.png"] == "input alpha dropped" and reason["e_16bit.png"] == "input 16-bit"
    assert reason["d_grey.png"] == "input greyscale" and "empty" in reason["h_empty.jpg"]
    crops = {n: cv2.imread(str(dst / "Person" / (Path(n).stem + ".jpg"))) for n in status if status[n] != CORRUPT}
    assert all(c.shape == (112, 112, 3) for c in crops.values())
    ref = crops["a_jpeg.jpg"].astype(float)
    for n in ("b_png.png", "c_rgba.png", "e_16bit.png", "f_huge.jpg"):
        assert np.abs(crops[n] - ref).mean() < 6.0, n
    with open(dst / REPORT_NAME, newline="") as f:
        assert list(csv.reader(f))[0] == list(REPORT_COLUMNS)
    # second run: nothing is detected again
    before = mtcnn.images_seen
    assert main(["align", str(tmp_path / "src"), str(dst), "--on-no-face", "center", "--quiet"]) == 0
    assert mtcnn.images_seen == before
    assert "0 images in" in capsys.readouterr().out
