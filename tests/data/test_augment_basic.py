"""Report 002's "basic" and "seaweed" augmentations (kerasface.data.augment.BasicAugment and its parts):
determinism under a seed, NumPy references for the geometry, the seaweed band rule; real faces of the
bundled LFW sample."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from kerasface.data import augment as A

N_FACES = 8


@pytest.fixture(scope="module")
def faces(sample_dir):
    from kerasface.data import load_images

    root = sample_dir / "lfw"
    rel = sorted(str(p.relative_to(root)) for p in root.glob("*/*.jpg"))[::29][:N_FACES]
    imgs, ok = load_images(root, rel, size=60, progress=False)
    assert ok.all()
    return imgs


@pytest.mark.parametrize("name", ["basic", "basic-seaweed"])
def test_policy_deterministic_under_a_seed_and_seed_dependent(faces, name):
    pol = A.make_augment(name)
    a, b, c = pol(faces, 11).numpy(), pol(faces, 11).numpy(), pol(faces, 12).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.shape == faces.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
    one = pol(faces[0], 11).numpy()
    assert one.shape == faces.shape[1:]


def test_flip_and_grey_match_numpy(faces):
    seed = 3
    flip = A._uniform(seed, N_FACES, 0.0, 1.0).numpy() < 0.5  # the draw the op makes
    want = np.where(flip[:, None, None, None], faces[:, :, ::-1], faces).astype(np.float32)
    np.testing.assert_array_equal(A.random_flip(faces, seed).numpy(), want)
    assert 0 < flip.sum() < N_FACES
    everyone = A.random_channel_mean_grey(faces, 5, prob=1.0).numpy()
    np.testing.assert_allclose(everyone, np.repeat(faces.astype(np.float32).mean(-1, keepdims=True), 3, -1),
                               atol=1e-4)
    np.testing.assert_array_equal(A.random_channel_mean_grey(faces, 5, prob=0.0).numpy(), faces)


def test_rotation_matches_a_numpy_resampling(faces):
    """Output pixel (row, col) reads the input at the centre-relative point turned by the drawn angle."""
    seed = 8
    angles = A._uniform(seed, N_FACES, -40.0, 40.0).numpy()  # the draw the op makes
    got = A.random_rotate(faces, seed).numpy()
    size = faces.shape[1]
    c = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    for i, deg in enumerate(angles):
        t = np.deg2rad(deg)
        x_in = np.cos(t) * (cols - c) - np.sin(t) * (rows - c) + c
        y_in = np.sin(t) * (cols - c) + np.cos(t) * (rows - c) + c
        ref = np.stack([ndimage.map_coordinates(faces[i, :, :, k].astype(np.float64), [y_in, x_in], order=1,
                                                mode="constant", cval=0.0) for k in range(3)], -1)
        inside = (x_in >= 1) & (x_in <= size - 2) & (y_in >= 1) & (y_in <= size - 2)  # edges fill differently
        np.testing.assert_allclose(got[i][inside], ref[inside], atol=0.05)
        assert inside.mean() > 0.5 and np.all(got[i][(x_in < -1) | (y_in < -1)] == 0.0)  # black corners
    assert np.abs(angles).max() <= 40.0 and np.ptp(angles) > 10


def test_scale_keeps_forty_percent_and_zooms_about_the_centre(faces):
    many = np.repeat(faces[:1], 200, axis=0)
    out = A.random_scale(many, 4).numpy()
    changed = np.any(np.abs(out - many) > 0.5, axis=(1, 2, 3))
    assert 0.3 < changed.mean() < 0.5  # p = 0.4
    # everything scaled the same way in the batch is one of two resamplings (one up, one down pair)
    assert len({out[i].tobytes() for i in np.flatnonzero(changed)}) <= 2
    # the centre pixel stays where it is
    c = faces.shape[1] // 2
    np.testing.assert_allclose(out[changed][:, c - 1:c + 1, c - 1:c + 1], many[changed][:, c - 1:c + 1, c - 1:c + 1],
                               atol=40)


def test_seaweed_bands_follow_the_rule(faces):
    size = faces.shape[1]
    v = size // 5
    fractions = []
    for seed in range(12):
        many = np.full((40, size, size, 3), 10.0, np.float32)
        out = A.seaweed_bands(many, seed).numpy()
        grey = np.all(out == 127.5, axis=-1)  # [B, H, W]
        hit = grey.any(axis=(1, 2))
        fractions.append(hit.mean())
        for g in grey[hit]:
            rows, cols = np.flatnonzero(g.all(axis=1)), np.flatnonzero(g.all(axis=0))
            explained = np.zeros_like(g)
            explained[rows] = True
            explained[:, cols] = True
            np.testing.assert_array_equal(g, explained)  # nothing but whole rows / whole columns
            runs = [r for band in (rows, cols) for r in np.split(band, np.flatnonzero(np.diff(band) > 1) + 1)
                    if len(r)]
            assert 1 <= len(runs) <= 2
            for r in runs:  # L * v long (two overlapping bands: up to 4v), starting before 3v - 1
                assert v <= len(r) <= 4 * v and r[0] < 3 * v - 1
        np.testing.assert_array_equal(out[~hit], many[~hit])
    assert 0.55 < np.mean(fractions) < 0.85  # p = 0.7


def test_grids_draw(faces, tmp_path):
    for name in ("basic", "basic-seaweed"):
        p = A.save_augment_grid(faces[:3], tmp_path / f"{name}.png", name, seed=1)
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and str(p).endswith(".png")


def test_basic_without_its_flip_is_the_rest_of_the_policy(faces):
    """flip=False (embedding distillation, which mirrors faces with their targets): the same draws for every
    other part, so the full policy is the flip followed by the flip-free one."""
    seed = 7
    flipped = A.random_flip(faces, A.sub_seed(seed, 1))
    for seaweed in (False, True):
        full, no_flip = A.BasicAugment(seaweed=seaweed), A.BasicAugment(seaweed=seaweed, flip=False)
        np.testing.assert_allclose(full(faces, seed).numpy(), no_flip(flipped, seed).numpy(), atol=1e-4)
        assert [name for name, _ in full.ops()][1:] == [name for name, _ in no_flip.ops()]
    # the trainer's choice: with per-image teacher targets the policy never mirrors
    from kerasface.presets import get_classify_preset
    from kerasface.training.tasks.classify_data import training_augment

    cfg = get_classify_preset("distill-sqnxt23v5-1.0").override(teacher_data="chips", augment="basic")
    assert training_augment(cfg, with_teacher_targets=True).flip is False
    assert training_augment(cfg, with_teacher_targets=False).flip is True
