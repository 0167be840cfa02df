"""The deterministic low-light transform and its preview grid, on real LFW faces."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data import load_images, low_light, open_image_source, save_lowlight_grid


@pytest.fixture(scope="module")
def faces(sample_dir) -> np.ndarray:
    src = open_image_source(sample_dir)
    imgs, ok = load_images(src, src.list_images()[:8], size=96, progress=False)
    assert ok.all()
    return imgs


def test_low_light_darker_in_range(faces):
    x = faces.astype(np.float32) / 255.0
    y = low_light(x, seed=1, image_ids=np.arange(len(x))).numpy()
    assert y.shape == x.shape and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    per_image = y.mean(axis=(1, 2, 3)) / x.mean(axis=(1, 2, 3))
    assert (per_image < 0.6).all() and (per_image > 0.02).all()  # darker, but not black
    assert y.std() > 0.01


def test_low_light_deterministic_per_seed_and_id(faces):
    x = faces.astype(np.float32) / 255.0
    ids = np.array([10, 11, 12, 13, 14, 15, 16, 17])
    y = low_light(x, 3, ids).numpy()
    # same (seed, id) -> same result, whatever the batch composition and position
    perm = np.array([5, 2, 7, 0])
    np.testing.assert_array_equal(low_light(x[perm], 3, ids[perm]).numpy(), y[perm])
    np.testing.assert_array_equal(low_light(x[4], 3, 14).numpy(), y[4])  # single image, scalar id
    # another id or another seed -> another darkening
    assert not np.allclose(low_light(x[:1], 3, [99]).numpy(), y[:1])
    assert not np.allclose(low_light(x, 4, ids).numpy(), y)


def test_low_light_inside_tf_data(faces):
    x = faces.astype(np.float32) / 255.0
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(len(x)))).batch(3).map(lambda im, i: low_light(im, 9, i))
    out = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_allclose(out, low_light(x, 9, np.arange(len(x))).numpy(), atol=1e-6)


def test_low_light_parameter_ranges():
    flat = np.full((1, 16, 16, 3), 0.5, np.float32)
    y = low_light(flat, 0, [1], gamma=(1.0, 1.0), brightness=(0.5, 0.5), noise_std=(0.0, 0.0)).numpy()
    np.testing.assert_allclose(y, 0.25, atol=1e-6)  # b * x**g with g=1, b=0.5, no noise
    z = low_light(flat, 0, [1], gamma=(2.0, 2.0), brightness=(1.0, 1.0), noise_std=(0.0, 0.0)).numpy()
    np.testing.assert_allclose(z, 0.25, atol=1e-6)  # x**2


def test_save_lowlight_grid(faces, tmp_path):
    out = save_lowlight_grid(faces[:5], tmp_path / "grid" / "lowlight.png", seed=2, title="LFW low-light")
    png = tmp_path / "grid" / "lowlight.png"
    assert out == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    import matplotlib.image as mpimg

    img = mpimg.imread(png)
    h, w = img.shape[:2]
    assert w > h  # 5 columns, 2 rows
    top, bottom = img[: h // 2, :, :3].mean(), img[h // 2:, :, :3].mean()
    assert bottom < top  # the low-light row is darker
