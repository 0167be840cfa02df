"""kerasface.data.augment: seeded ops vs NumPy references, on real faces from the bundled LFW sample."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kerasface.data import augment as A
from kerasface.data.sampling import capped_epoch_rows, expanded_epoch

N_FACES = 6


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    rel = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))[::37][:N_FACES]
    imgs, ok = load_images(root, rel, size=64, progress=False)
    assert ok.all() and imgs.dtype == np.uint8
    return imgs


def np_grey(x):
    x = x.astype(np.float64)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def pil_equalize_channel(ch: np.ndarray) -> np.ndarray:
    """PIL ImageOps.equalize for one uint8 channel, written out as PIL does it (loop over bins)."""
    h = np.bincount(ch.ravel(), minlength=256).tolist()
    histo = [c for c in h if c]
    if len(histo) <= 1:
        return ch.copy()
    step = (sum(histo) - histo[-1]) // 255
    if not step:
        return ch.copy()
    lut, n = [], step // 2
    for i in range(256):
        lut.append(min(255, n // step))
        n = n + h[i]
    return np.asarray(lut, dtype=np.uint8)[ch]


def test_shapes_ranges_dtype_and_single_image(faces):
    ops = [lambda x, s: A.random_resized_crop(x, s), lambda x, s: A.color_jitter(x, s), A.to_grayscale3,
           lambda x, s: A.brightness_jitter(x, s, 0.5), lambda x, s: A.posterize(x, 2), A.equalize, A.hflip,
           A.make_augment("report001-both"), A.make_augment("report003"), A.make_augment("none")]
    for op in ops:
        for x in (faces, faces.astype(np.float32)):
            y = op(x, 7).numpy()
            assert y.shape == faces.shape and y.dtype == np.float32
            assert y.min() >= 0.0 and y.max() <= 255.0
        one = op(faces[0], 7).numpy()
        assert one.shape == faces.shape[1:]


def test_deterministic_and_seed_dependent(faces):
    for name in ("report001-crop", "report001-jitter", "report001-both", "report003"):
        pol = A.make_augment(name)
        a, b, c = pol(faces, 3).numpy(), pol(faces, 3).numpy(), pol(faces, 4).numpy()
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - c).max() > 1.0, name
    # array seeds and int seeds agree: int s -> [s, 0]
    np.testing.assert_array_equal(A.color_jitter(faces, 5).numpy(), A.color_jitter(faces, [5, 0]).numpy())
    # a per-image parameter differs across images of one batch
    f = A.jitter_factors(1, N_FACES)["brightness"].numpy()
    assert len(set(np.round(f, 6))) == N_FACES and f.min() >= 0.3 and f.max() <= 1.7


def test_posterize_exact(faces):
    np.testing.assert_array_equal(A.posterize(faces, 2).numpy(), (faces & 0b11000000).astype(np.float32))
    np.testing.assert_array_equal(A.posterize(faces, 5).numpy(), (faces & 0b11111000).astype(np.float32))
    assert set(np.unique(A.posterize(faces, 2).numpy())) <= {0.0, 64.0, 128.0, 192.0}


def test_greyscale_itu601(faces):
    g = A.to_grayscale3(faces).numpy()
    ref = np_grey(faces)
    for c in range(3):
        np.testing.assert_allclose(g[..., c], ref, atol=1e-3)
    np.testing.assert_allclose(A.to_grayscale3(np.full((1, 2, 2, 3), [255, 0, 0], np.uint8)).numpy(), 0.299 * 255,
                               rtol=1e-6)


@pytest.mark.parametrize("factor", [0.3, 0.8, 1.7])
def test_brightness_contrast_saturation_formulas(faces, factor):
    x = faces.astype(np.float64)
    f = np.full(N_FACES, factor, np.float32)
    np.testing.assert_allclose(A.adjust_brightness(faces, f).numpy(), np.clip(factor * x, 0, 255), atol=1e-3)
    mean = np_grey(x).mean(axis=(1, 2))[:, None, None, None]
    np.testing.assert_allclose(A.adjust_contrast(faces, f).numpy(), np.clip(factor * x + (1 - factor) * mean, 0, 255),
                               atol=2e-3)
    grey = np_grey(x)[..., None]
    np.testing.assert_allclose(A.adjust_saturation(faces, f).numpy(), np.clip(factor * x + (1 - factor) * grey, 0, 255),
                               atol=2e-3)


def test_color_jitter_is_brightness_contrast_saturation_in_order(faces):
    f = {k: v.numpy().astype(np.float64) for k, v in A.jitter_factors(9, N_FACES).items()}
    x = faces.astype(np.float64)
    b, c, s = (f[k][:, None, None, None] for k in ("brightness", "contrast", "saturation"))
    x = np.clip(b * x, 0, 255)
    x = np.clip(c * x + (1 - c) * np_grey(x).mean(axis=(1, 2))[:, None, None, None], 0, 255)
    x = np.clip(s * x + (1 - s) * np_grey(x)[..., None], 0, 255)
    np.testing.assert_allclose(A.color_jitter(faces, 9).numpy(), x, atol=5e-3)
    # brightness_jitter(0.5): factor = output / input lies in [0.5, 1.5]
    y = A.brightness_jitter(faces, 2, 0.5).numpy()
    ok = (faces > 20) & (y < 254)
    ratio = np.array([np.median(y[i][ok[i]] / faces[i][ok[i]]) for i in range(N_FACES)])
    assert ratio.min() >= 0.5 - 1e-4 and ratio.max() <= 1.5 + 1e-4 and ratio.std() > 0.01


def test_equalize_matches_pil_algorithm(faces):
    got = A.equalize(faces).numpy()
    ref = np.stack([np.stack([pil_equalize_channel(im[..., c]) for c in range(3)], -1) for im in faces])
    np.testing.assert_array_equal(got, ref.astype(np.float32))
    # degenerate channels: one value (unchanged), two values
    flat = np.full((1, 8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(A.equalize(flat).numpy(), flat)
    two = flat.copy()
    two[0, :4] = 10
    np.testing.assert_array_equal(A.equalize(two).numpy()[0, ..., 0], pil_equalize_channel(two[0, ..., 0]))
    # cv2.equalizeHist uses another table (differs slightly, documented)
    import cv2
    cvq = np.stack([cv2.equalizeHist(np.ascontiguousarray(faces[0][..., c])) for c in range(3)], -1)
    d = np.abs(cvq.astype(int) - got[0].astype(int))
    assert d.max() > 0 and d.mean() < 8


def test_hflip(faces):
    np.testing.assert_array_equal(A.hflip(faces).numpy(), faces[:, :, ::-1].astype(np.float32))


def test_random_resized_crop_scale_bounds():
    H = W = 100
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    ramp = np.stack([rows, cols, np.zeros_like(rows)], -1)[None].repeat(64, 0) * 2.0  # values 0..198
    y = A.random_resized_crop(ramp, 11, scale=(0.8, 1.0)).numpy() / 2.0
    top, bottom = y[:, 0, 0, 0], y[:, -1, 0, 0]
    left, right = y[:, 0, 0, 1], y[:, 0, -1, 1]
    h, w = bottom - top + 1, right - left + 1
    area = h * w / (H * W)
    assert area.min() >= 0.8 - 0.02 and area.max() <= 1.0 + 1e-6
    assert area.max() - area.min() > 0.1  # the fraction really varies
    assert (top >= 0).all() and (bottom <= H - 1 + 1e-3).all() and (left >= 0).all() and (right <= W - 1 + 1e-3).all()
    np.testing.assert_allclose(h / w, 1.0, atol=0.03)  # aspect ratio kept
    # scale (1, 1): identity; explicit output size
    np.testing.assert_allclose(A.random_resized_crop(ramp[:2], 0, scale=(1.0, 1.0)).numpy(), ramp[:2], atol=1e-3)
    assert A.random_resized_crop(ramp[:2], 0, size=56).shape == (2, 56, 56, 3)


def test_report003_applies_exactly_one_op_or_keeps_the_original(faces):
    pol = A.Report003Augment()
    x = np.concatenate([faces] * 4)  # 24 images: every choice gets drawn
    seed = 21
    out = pol(x, seed).numpy()
    k = pol.choices(seed, len(x)).numpy()
    assert set(k.tolist()) == set(range(6))  # the original (0) and the five ops
    variants = pol.variants(x, seed).numpy()  # [6, B, ...]: the fixed 6x set
    np.testing.assert_array_equal(variants[0], x.astype(np.float32))
    singles = np.stack([fn(x, A.sub_seed(seed, i + 1)).numpy() for i, (_, fn) in enumerate(pol.ops())])
    np.testing.assert_array_equal(variants[1:], singles)
    for b in range(len(x)):
        np.testing.assert_array_equal(out[b], variants[k[b], b])
        # not a composition of two ops
        assert not np.array_equal(out[b], A.to_grayscale3(A.posterize(x[b:b + 1], 2)).numpy()[0])
    np.testing.assert_array_equal(out, pol.apply_choices(x, k, seed).numpy())  # the draw = its choices given


def test_report003_ops_are_the_reports_five_in_its_order():
    """Grayscale(3), ColorJitter(brightness=.5, hue=.3), GaussianBlur((5, 9), (0.1, 5.)), RandomPosterize(2),
    RandomEqualize (the report's Markdown export; its text file cuts the list off)."""
    pol = A.make_augment("report003")
    assert [n for n, _ in pol.ops()] == ["greyscale", "jitter b 0.5 h 0.3", "blur 5x9 s 0.1-5",
                                         "posterize 2 bits p 0.5", "equalize p 0.5"]
    assert pol.copies == 6


def test_apply_choices_gives_each_image_its_variant(faces):
    pol = A.Report003Augment()
    x = np.concatenate([faces] * 2)
    k = np.arange(len(x)) % 6
    y = pol.apply_choices(x, k, 4).numpy()
    v = pol.variants(x, 4).numpy()
    for b in range(len(x)):
        np.testing.assert_array_equal(y[b], v[k[b], b])
    np.testing.assert_array_equal(y[k == 0], x[k == 0].astype(np.float32))  # variant 0: the original itself
    grey = y[k == 1]
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-4)


def np_adjust_hue(img: np.ndarray, delta: float) -> np.ndarray:
    import colorsys

    out = np.empty(img.shape, np.float64)
    for (i, j), _ in np.ndenumerate(img[..., 0]):
        h, s, v = colorsys.rgb_to_hsv(*(img[i, j].astype(np.float64) / 255.0))
        out[i, j] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out * 255.0


def test_adjust_hue_matches_colorsys(faces):
    x = faces[:2, ::4, ::4]  # 16x16: the per-pixel reference stays fast
    for delta in (0.3, -0.17, 0.0):
        got = A.adjust_hue(x, delta).numpy()
        ref = np.stack([np_adjust_hue(im, delta) for im in x])
        np.testing.assert_allclose(got, ref, atol=0.05)
    per_image = A.adjust_hue(x, [0.1, -0.25]).numpy()
    np.testing.assert_allclose(per_image[1], np_adjust_hue(x[1], -0.25), atol=0.05)


def test_brightness_hue_jitter_draws_factors_and_order_per_image(faces):
    x = np.concatenate([faces] * 3)
    n, seed = len(x), 13
    f = tf.random.stateless_uniform([n], seed=A.sub_seed(seed, 0), minval=0.5, maxval=1.5).numpy()
    d = tf.random.stateless_uniform([n], seed=A.sub_seed(seed, 1), minval=-0.3, maxval=0.3).numpy()
    y = A.brightness_hue_jitter(x, seed, 0.5, 0.3).numpy()
    firsts = []
    for b in range(n):
        bright_first = A.adjust_hue(A.adjust_brightness(x[b:b + 1], f[b]), d[b]).numpy()[0]
        hue_first = A.adjust_brightness(A.adjust_hue(x[b:b + 1], d[b]), f[b]).numpy()[0]
        if np.array_equal(y[b], bright_first):
            firsts.append(True)
        else:
            np.testing.assert_array_equal(y[b], hue_first)
            firsts.append(False)
    assert 0 < sum(firsts) < n  # both orders occur
    assert (f.min(), f.max()) > (0.5, 0.0) and f.max() < 1.5 and np.abs(d).max() <= 0.3
    np.testing.assert_array_equal(y, A.brightness_hue_jitter(x, seed, 0.5, 0.3).numpy())


def np_gaussian_blur(img: np.ndarray, kx: int, ky: int, sigma: float) -> np.ndarray:
    def kernel(k):
        t = np.arange(k, dtype=np.float64) - (k - 1) / 2.0
        w = np.exp(-0.5 * (t / sigma) ** 2)
        return w / w.sum()

    k2 = np.outer(kernel(ky), kernel(kx))  # ky rows x kx columns
    p = np.pad(img.astype(np.float64), ((ky // 2, ky // 2), (kx // 2, kx // 2), (0, 0)), mode="reflect")
    H, W = img.shape[:2]
    out = np.zeros(img.shape, np.float64)
    for i in range(ky):
        for j in range(kx):
            out += k2[i, j] * p[i:i + H, j:j + W]
    return out


def test_gaussian_blur_matches_numpy(faces):
    for kernel, sigma in (((5, 9), 1.7), ((5, 9), 5.0), ((3, 1), 0.6)):
        got = A.gaussian_blur(faces[:3], 2, kernel, (sigma, sigma)).numpy()
        for b in range(3):
            np.testing.assert_allclose(got[b], np_gaussian_blur(faces[b], *kernel, sigma), atol=2e-3)
    # 5 wide, 9 high: a vertical edge spreads over 2 columns each side, a horizontal one over 4 rows
    step = np.zeros((1, 32, 32, 3), np.float32)
    step[:, :, 16:] = 255.0
    v = A.gaussian_blur(step, 0, (5, 9), (5.0, 5.0)).numpy()[0, 10, :, 0]
    assert v[13] == 0.0 and 0 < v[14] < v[17] < 254.9 and v[18] > 254.99
    hor = A.gaussian_blur(np.transpose(step, (0, 2, 1, 3)), 0, (5, 9), (5.0, 5.0)).numpy()[0, :, 10, 0]
    assert hor[11] == 0.0 and 0 < hor[12] and hor[19] < 254.9 and hor[20] > 254.99
    # sigma drawn per image in (0.1, 5): the blur's strength varies over a batch
    same = np.repeat(faces[:1], 8, axis=0)
    spread = A.gaussian_blur(same, 9).numpy().std(axis=(1, 2, 3))
    assert spread.max() - spread.min() > 1.0


def test_expanded_epoch_holds_every_row_with_every_variant_once():
    rows = np.array([4, 9, 2, 7, 11], np.int64)
    pos, var = expanded_epoch(rows, 6, seed=3, epoch=0)
    assert len(pos) == len(var) == 6 * len(rows)
    assert sorted(zip(pos.tolist(), var.tolist())) == sorted((r, k) for r in rows.tolist() for k in range(6))
    again = expanded_epoch(rows, 6, seed=3, epoch=0)
    np.testing.assert_array_equal(pos, again[0])
    np.testing.assert_array_equal(var, again[1])
    other = expanded_epoch(rows, 6, seed=3, epoch=1)
    assert not np.array_equal(pos * 6 + var, other[0] * 6 + other[1])  # a new order every epoch
    with pytest.raises(ValueError, match="copies"):
        expanded_epoch(rows, 0)


def test_report003_random_ops_apply_with_probability_half(faces):
    x = np.concatenate([faces] * 30)  # 180 images
    for name, op in (("posterize", lambda v, s: A.posterize(v, 2)), ("equalize", A.equalize),
                     ("autocontrast", A.autocontrast)):
        y = A.with_probability(op, 0.5)(x, 3).numpy()
        full = op(x, None).numpy()
        changed = np.any(y != x, axis=(1, 2, 3))
        np.testing.assert_array_equal(y[changed], full[changed])  # changed images got the whole op
        np.testing.assert_array_equal(y[~changed], x[~changed].astype(np.float32))
        assert 0.38 < changed.mean() < 0.62, name


def test_autocontrast_matches_numpy(faces):
    def ref(img):
        out = img.astype(np.float64).copy()
        for c in range(3):
            lo, hi = out[..., c].min(), out[..., c].max()
            if hi > lo:
                out[..., c] = np.floor(np.clip((out[..., c] - lo) * (255.0 / (hi - lo)), 0, 255))
        return out

    dim = (faces.astype(np.float32) * 0.5 + 40).round()  # a low-contrast copy
    dim[0, ..., 2] = 77.0  # a flat channel stays as it is
    got = A.autocontrast(dim).numpy()
    for b in range(len(dim)):
        np.testing.assert_allclose(got[b], ref(dim[b]), atol=1.0001)  # float32 vs float64 at the floor
    assert got[1].min() == 0 and got[1].max() == 255


def test_report001_switches(faces):
    s = 8
    crop = A.make_augment("report001-crop")(faces, s).numpy()
    jit = A.make_augment("report001-jitter")(faces, s).numpy()
    both = A.make_augment("report001-both")(faces, s).numpy()
    np.testing.assert_array_equal(crop, A.random_resized_crop(faces, A.sub_seed(s, 1)).numpy())
    np.testing.assert_array_equal(jit, A.color_jitter(faces, A.sub_seed(s, 2)).numpy())
    np.testing.assert_allclose(both, A.color_jitter(crop, A.sub_seed(s, 2)).numpy(), atol=1e-4)
    np.testing.assert_array_equal(A.make_augment("none")(faces, s).numpy(), faces.astype(np.float32))
    with pytest.raises(ValueError):
        A.make_augment("report001-blur")


def test_in_tf_data_deterministic_per_epoch(faces):
    ds = tf.data.Dataset.from_tensor_slices((faces, np.arange(N_FACES))).batch(3)
    aug = A.augment_dataset(ds, A.make_augment("report003"), seed=5)
    e1 = [x.numpy() for x, _ in aug]
    e2 = [x.numpy() for x, _ in aug]
    again = [x.numpy() for x, _ in A.augment_dataset(ds, A.make_augment("report003"), seed=5)]
    np.testing.assert_array_equal(np.concatenate(e1), np.concatenate(again))
    assert not np.array_equal(np.concatenate(e1), np.concatenate(e2))  # a new draw every epoch


def test_save_augment_grid(faces, tmp_path):
    p = A.save_augment_grid(faces[:3], tmp_path / "g.png", "report003", seed=1)
    import cv2
    im = cv2.imread(p)
    assert im is not None and im.shape[0] > 400  # 7 rows: original, 5 ops, policy


def test_capped_epoch_rows():
    labels = np.repeat(np.arange(4), [3, 10, 1, 7])
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    seen = {k: [] for k in range(4)}
    for epoch in range(3):
        rows = capped_epoch_rows(labels, max_per_identity=4, seed=1, epoch=epoch)
        assert len(set(rows.tolist())) == len(rows)
        counts = np.bincount(labels[rows], minlength=4)
        np.testing.assert_array_equal(counts, [3, 4, 1, 4])
        for r in rows:
            seen[int(labels[r])].append(int(r))
        np.testing.assert_array_equal(rows, capped_epoch_rows(labels, 4, seed=1, epoch=epoch))
    # identity 1 (10 images): 12 draws over 3 epochs cover all 10; identity 3 (7): 12 draws cover 7
    assert len(set(seen[1])) == 10 and len(set(seen[3])) == 7
    assert not np.array_equal(capped_epoch_rows(labels, 4, seed=1, epoch=0),
                              capped_epoch_rows(labels, 4, seed=1, epoch=1))
    grouped = capped_epoch_rows(labels, 4, seed=1, shuffle=False)
    assert (np.diff(labels[grouped]) >= 0).all()
