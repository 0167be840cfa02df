"""Image decoding/cache and the tf.data pairs pipeline on the bundled LFW sample."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from kerasface.data import CorruptImageError, PairData, decode_image, load_images, open_image_source, parse_pairs

SIZE = 64  # small cache keeps the tests fast


@pytest.fixture(scope="module")
def train_data(sample_dir) -> PairData:
    return PairData.from_pairs(parse_pairs(sample_dir / "pairsTrain.txt"), sample_dir, size=SIZE, progress=False)


def _first(ds):
    (a, b), y = next(iter(ds))
    return a.numpy(), b.numpy(), y.numpy()


def test_decode_image_is_rgb(sample_dir):
    src = open_image_source(sample_dir)
    rel = src.list_images()[0]
    data = src.read_bytes(rel)
    img = decode_image(data, rel)
    assert img.dtype == np.uint8 and img.shape == (250, 250, 3)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(img, bgr[..., ::-1])


@pytest.mark.parametrize("payload", [b"", b"not a jpeg" * 50, "truncated"])
def test_decode_image_rejects_corrupt(sample_dir, payload):
    src = open_image_source(sample_dir)
    rel = src.list_images()[0]
    if payload == "truncated":
        payload = src.read_bytes(rel)[:3000]
    with pytest.raises(CorruptImageError, match="Broken_Person_0001.jpg") as e:
        decode_image(payload, "Broken_Person/Broken_Person_0001.jpg")
    assert isinstance(e.value, ValueError)


def test_load_images_dedup_and_center_crop(sample_dir):
    src = open_image_source(sample_dir)
    rels = src.list_images()[:3]
    imgs, ok = load_images(src, [rels[0], rels[1], rels[0], rels[2]], size=32, progress=False)
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8 and ok.all()
    np.testing.assert_array_equal(imgs[0], imgs[2])
    assert not np.array_equal(imgs[0], imgs[1])
    crop, _ = load_images(src, rels[:1], size=32, center_crop=0.5, progress=False)
    full = decode_image(src.read_bytes(rels[0]), rels[0])
    expected = cv2.resize(full[62:187, 62:187], (32, 32), interpolation=cv2.INTER_AREA)  # 125 px centre of 250
    np.testing.assert_array_equal(crop[0], expected)
    assert not np.array_equal(crop[0], imgs[0])


@pytest.fixture()
def corrupt_copy(sample_dir, tmp_path):
    """A copy of the sample where two images used by pairsVal are broken (truncated, garbage)."""
    shutil.copytree(sample_dir / "lfw", tmp_path / "lfw")
    pairs = parse_pairs(sample_dir / "pairsVal.txt")
    broken = [pairs[0].path1, pairs[-1].path2]
    data = (tmp_path / "lfw" / broken[0]).read_bytes()
    (tmp_path / "lfw" / broken[0]).write_bytes(data[: len(data) // 3])
    (tmp_path / "lfw" / broken[1]).write_bytes(b"\x00garbage" * 100)
    return tmp_path, pairs, broken


def test_corrupt_raise_mode_names_file(corrupt_copy):
    root, pairs, broken = corrupt_copy
    with pytest.raises(CorruptImageError, match=broken[0].split("/")[1]):
        load_images(root, [broken[0]], on_error="raise", progress=False)
    with pytest.raises(CorruptImageError, match=broken[0].split("/")[1]):
        PairData.from_pairs(pairs, root, size=SIZE, on_error="raise", progress=False)


def test_corrupt_skip_mode_counts_and_logs(corrupt_copy, caplog):
    root, pairs, broken = corrupt_copy
    src = open_image_source(root)
    good = next(r for p in pairs for r in (p.path1, p.path2) if r not in broken)
    rels = [good, broken[0], broken[1]]
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        imgs, ok = load_images(src, rels, size=SIZE, on_error="skip", progress=False)
    assert ok.tolist() == [True, False, False]
    assert imgs[0].std() > 10 and not imgs[1:].any()  # real face kept, broken rows left black
    log = caplog.text
    assert broken[0] in log and broken[1] in log and "cannot decode" in log

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        data = PairData.from_pairs(pairs, src, size=SIZE, on_error="skip", progress=False)
    dropped = [p for p in pairs if {p.path1, p.path2} & set(broken)]
    r = data.report
    assert (r["requested"], r["corrupt"], r["corrupt_images"],
            r["kept"]) == (len(pairs), len(dropped), 2, len(pairs) - len(dropped))
    assert set(r["corrupt_names"]) == set(broken) and r["missing"] == 0
    assert len(data) == len(data.pairs) == len(data.index) == r["kept"]
    assert not set(broken) & set(data.relpaths)
    assert f"dropped {len(dropped)} of {len(pairs)} pairs" in caplog.text


def test_pairdata_cache_and_index(train_data, sample_dir):
    d = train_data
    n_pairs = len(parse_pairs(sample_dir / "pairsTrain.txt"))
    assert d.report["kept"] == d.report["requested"] == n_pairs and d.report["missing"] == d.report["corrupt"] == 0
    assert d.images.dtype == np.uint8 and d.images.shape == (len(d.relpaths), SIZE, SIZE, 3)
    assert len(set(d.relpaths)) == len(d.relpaths)  # each distinct image cached once
    assert d.index.dtype == np.int32 and d.index.shape == (n_pairs, 2) and d.index.max() < len(d.images)
    assert d.labels.dtype == np.int32 and d.labels.sum() == n_pairs // 2
    for p, (i, j), y in zip(d.pairs, d.index, d.labels):
        assert (d.relpaths[i], d.relpaths[j], bool(y)) == (p.path1, p.path2, p.same)


def test_dataset_shapes_dtypes_range_balance(train_data):
    ds = train_data.dataset(batch_size=32, seed=0)
    labels, n_batches = [], 0
    for (a, b), y in ds:
        assert a.dtype == b.dtype == "float32" and y.dtype == "int32"
        assert a.shape[1:] == b.shape[1:] == (SIZE, SIZE, 3) and a.shape[0] == b.shape[0] == y.shape[0] <= 32
        assert float(a.numpy().min()) >= -1.0 and float(a.numpy().max()) < 1.0
        labels.append(y.numpy())
        n_batches += 1
    labels = np.concatenate(labels)
    assert len(labels) == len(train_data) and n_batches == -(-len(train_data) // 32)
    assert labels.sum() == len(labels) // 2  # one epoch = every pair exactly once, balanced
    (a, _), _ = next(iter(train_data.dataset(batch_size=4, shuffle=False)))
    np.testing.assert_allclose(a.numpy(),
                               (train_data.images[train_data.index[:4, 0]].astype(np.float32) - 127.5) / 128.0)
    full = train_data.dataset(batch_size=32, drop_remainder=True)
    assert all(y.shape[0] == 32 for _, y in full)


def test_dataset_deterministic_with_seed(train_data):
    kw = dict(batch_size=16, augment=True, low_light=True)
    a1, b1, y1 = _first(train_data.dataset(seed=7, **kw))
    a2, b2, y2 = _first(train_data.dataset(seed=7, **kw))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(y1, y2)
    a3, _, _ = _first(train_data.dataset(seed=8, **kw))
    assert not np.array_equal(a1, a3)
    # reshuffled every epoch, from the same seed: epoch 1 is not epoch 0, iterating epoch 0 again is epoch 0
    ds = train_data.dataset(batch_size=len(train_data), seed=7)
    e1, again = [np.concatenate([x.numpy() for (x, _), _ in ds]) for _ in range(2)]
    e2 = np.concatenate([x.numpy() for (x, _), _ in train_data.dataset(batch_size=len(train_data), seed=7,
                                                                         first_epoch=1)])
    np.testing.assert_array_equal(e1, again)
    assert not np.array_equal(e1, e2)
    assert np.isclose(e1.sum(), e2.sum(), rtol=1e-5)  # same pairs, new order


def test_epoch_k_is_the_same_whether_the_stream_starts_at_0_or_resumes_at_k(train_data):
    """A resumed run (first_epoch=k) sees in epoch k exactly what an uninterrupted one sees (issue 16, s. 7)."""
    batch = 32
    steps = -(-len(train_data) // batch)
    kw = dict(batch_size=batch, seed=3, augment=True, repeat=True)
    whole = [(a.numpy(), y.numpy()) for (a, _), y in train_data.dataset(first_epoch=0, **kw).take(3 * steps)]
    resumed = [(a.numpy(), y.numpy()) for (a, _), y in train_data.dataset(first_epoch=2, **kw).take(steps)]
    for (a1, y1), (a2, y2) in zip(whole[2 * steps:], resumed, strict=True):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(y1, y2)
    # every epoch holds every pair once, in an order of its own
    epoch_labels = [np.concatenate([y for _, y in whole[e * steps:(e + 1) * steps]]) for e in range(3)]
    assert all(len(y) == len(train_data) and y.sum() == train_data.labels.sum() for y in epoch_labels)
    firsts = [whole[e * steps][0] for e in range(3)]
    assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])


def test_augment_flips_each_image_independently(train_data):
    plain_a, plain_b, _ = _first(train_data.dataset(batch_size=64, shuffle=False))
    aug_a, aug_b, _ = _first(train_data.dataset(batch_size=64, shuffle=False, augment=True, seed=3))
    flipped = []
    for plain, aug in ((plain_a, aug_a), (plain_b, aug_b)):
        for p, q in zip(plain, aug):
            same, mirrored = np.array_equal(p, q), np.array_equal(p[:, ::-1], q)
            assert same or mirrored
            flipped.append(mirrored and not same)
    flipped = np.array(flipped).reshape(2, -1)
    assert 0.25 < flipped.mean() < 0.75
    assert (flipped[0] != flipped[1]).any()  # the two images of a pair flip independently


def test_dataset_low_light_is_darker_and_fixed(train_data):
    a, _, _ = _first(train_data.dataset(batch_size=64, shuffle=False))
    d, _, _ = _first(train_data.dataset(batch_size=64, shuffle=False, low_light=True))
    assert d.mean() < a.mean() - 0.3  # in normalised units
    assert d.min() >= -1.0 and d.max() < 1.0
    # the same image gets the same dark version in any order / batch: a shuffled epoch (one batch)
    n = len(train_data)
    plain, _, _ = _first(train_data.dataset(batch_size=n, seed=5))
    dark, _, _ = _first(train_data.dataset(batch_size=n, seed=5, low_light=True))
    for i in range(64):
        j = next(j for j in range(n) if np.array_equal(plain[j], a[i]))
        np.testing.assert_array_equal(dark[j], d[i])
