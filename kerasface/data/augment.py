"""Seeded image augmentations of reports 001, 002 and 003, in TensorFlow ops (usable in ``tf.data``).

Every op takes a batch ``[B, H, W, 3]`` (or one image ``[H, W, 3]``) of RGB pixel
values in [0, 255], uint8 or float, and returns float32 values in [0, 255] of the
same shape.  Random ops take a ``seed``: a Python int, a scalar integer tensor
(e.g. one element of ``tf.data.Dataset.random``), or an int ``[2]`` stateless seed.
All randomness is ``tf.random.stateless_*``: the same batch and seed give the same
output, on every run.  Per-image parameters are drawn as one vector ``[B]`` from
the batch seed, so image ``b`` of a batch gets the ``b``-th draw.

Ops (formulas in ``docs/augmentation.md``):

* :func:`random_resized_crop` — a crop covering a fraction ``s ~ U(scale)`` of the
  image *area*, with the image's aspect ratio (side ``round(H sqrt(s))`` x
  ``round(W sqrt(s))``), at a uniform position, resized back to ``H x W`` (or
  ``size``) bilinearly (align-corners sampling of the crop's pixel centres);
* :func:`color_jitter` — torchvision ``ColorJitter`` formulas: brightness ``b x``,
  contrast ``c x + (1 - c) mean(grey(x))``, saturation ``s x + (1 - s) grey(x)``,
  each clipped to [0, 255], applied in that fixed order;
* :func:`to_grayscale3`, :func:`brightness_jitter`, :func:`brightness_hue_jitter` (with
  :func:`adjust_hue`), :func:`gaussian_blur`, :func:`posterize`, :func:`equalize` (PIL
  ``ImageOps.equalize`` / torchvision algorithm, per channel), :func:`autocontrast`, :func:`hflip`.

* :func:`random_flip`, :func:`random_rotate`, :func:`random_scale`, :func:`colour_shift`,
  :func:`random_channel_mean_grey`, :func:`seaweed_bands` — the parts of :class:`BasicAugment`.

Policies: :class:`Report001Augment` (crop then jitter, each switchable),
:class:`BasicAugment` (report 002's code's "basic" set: flip, rotation, scale, colour
shift, random grey; with ``seaweed=True`` then its "seaweed" bands) and
:class:`Report003Augment` (the original or exactly one of five ops per image, chosen uniformly or
given: the fixed 6x set);
:func:`make_augment` builds them by name, :func:`augment_dataset` maps one over a
``tf.data.Dataset`` with a per-batch seed stream, :func:`save_augment_grid` draws a
PNG of what a policy does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kerasface.io import save_figure

__all__ = [
    "random_resized_crop", "color_jitter", "to_grayscale3", "brightness_jitter", "posterize", "equalize",
    "hflip", "Report001Augment", "Report003Augment", "make_augment", "augment_dataset", "save_augment_grid",
    "AUGMENTATIONS", "GREY_WEIGHTS", "random_flip", "random_rotate", "random_scale", "colour_shift",
    "random_channel_mean_grey", "seaweed_bands", "BasicAugment", "autocontrast", "with_probability",
    "adjust_hue", "brightness_hue_jitter", "gaussian_blur", "gaussian_kernel1d",
]

#: ITU-R 601-2 luma weights (PIL ``convert("L")``); torchvision's tensor path uses 0.2989 for red.
GREY_WEIGHTS = (0.299, 0.587, 0.114)

Range = tuple[float, float]


# --------------------------------------------------------------------------- helpers
def _seed2(seed) -> tf.Tensor:
    """Any seed form -> int64 ``[2]`` stateless seed (a scalar ``s`` becomes ``[s, 0]``)."""
    s = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if s.shape.rank == 0:
        return tf.stack([s, tf.constant(0, tf.int64)])
    return tf.reshape(s, [2])


def sub_seed(seed, k: int) -> tf.Tensor:
    """The seed a policy hands to its ``k``-th part: ``stateless_fold_in(seed2, k)``."""
    return tf.cast(tf.random.experimental.stateless_fold_in(_seed2(seed), k), tf.int64)


def _batch(x) -> tuple[tf.Tensor, bool]:
    """float32 ``[B, H, W, 3]`` and whether the input was a single image."""
    x = tf.convert_to_tensor(x)
    single = x.shape.rank == 3
    if single:
        x = x[None]
    if x.shape.rank != 4:
        raise ValueError(f"expected images [B, H, W, 3] or [H, W, 3], got shape {x.shape}")
    return tf.cast(x, tf.float32), single


def _out(y: tf.Tensor, single: bool) -> tf.Tensor:
    return y[0] if single else y


def _uniform(seed, n, lo: float, hi: float) -> tf.Tensor:
    return tf.random.stateless_uniform([n], seed=_seed2(seed), minval=float(lo), maxval=float(hi), dtype=tf.float32)


def _to_uint8(x: tf.Tensor) -> tf.Tensor:
    """Round and clip float [0, 255] to uint8 (uint8 input passes through)."""
    if x.dtype == tf.uint8:
        return x
    return tf.cast(tf.clip_by_value(tf.round(tf.cast(x, tf.float32)), 0.0, 255.0), tf.uint8)


def _grey(x: tf.Tensor) -> tf.Tensor:
    """``[B, H, W, 1]`` luma ``0.299 R + 0.587 G + 0.114 B`` (float, not rounded)."""
    w = tf.constant(GREY_WEIGHTS, tf.float32)
    return tf.reduce_sum(x * w, axis=-1, keepdims=True)


def _clip(x: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(x, 0.0, 255.0)


# --------------------------------------------------------------------------- ops
def random_resized_crop(x, seed, scale: Range = (0.8, 1.0),
                        size: int | Sequence[int] | None = None) -> tf.Tensor:
    """Crop a random region of area fraction ``s ~ U(scale)`` and resize it to ``size`` (default ``H x W``).

    The crop keeps the image's aspect ratio: ``h = round(H sqrt(s))``,
    ``w = round(W sqrt(s))`` (at least 1 pixel); its top-left corner is uniform
    over the ``(H - h + 1) x (W - w + 1)`` integer positions.  The crop is resized
    bilinearly with ``tf.image.crop_and_resize``, whose sampling puts the output's
    corner pixels on the crop's corner pixel centres (align-corners); with
    ``s = 1`` and no ``size`` the image comes back unchanged.  This is torchvision's
    ``RandomResizedCrop(scale=scale, ratio=(r, r))`` with ``r`` the image's own
    aspect ratio (1 for square faces).
    """
    x, single = _batch(x)
    lo, hi = float(scale[0]), float(scale[1])
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
    shape = tf.shape(x)
    n, H, W = shape[0], shape[1], shape[2]
    if size is None:
        out_hw = (x.shape[1], x.shape[2]) if x.shape[1] is not None and x.shape[2] is not None else (H, W)
    else:
        out_hw = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
    u = tf.random.stateless_uniform([n, 3], seed=_seed2(seed), dtype=tf.float32)
    s = lo + (hi - lo) * u[:, 0]
    Hf, Wf = tf.cast(H, tf.float32), tf.cast(W, tf.float32)
    h = tf.clip_by_value(tf.round(Hf * tf.sqrt(s)), 1.0, Hf)
    w = tf.clip_by_value(tf.round(Wf * tf.sqrt(s)), 1.0, Wf)
    top = tf.minimum(tf.floor(u[:, 1] * (Hf - h + 1.0)), Hf - h)
    left = tf.minimum(tf.floor(u[:, 2] * (Wf - w + 1.0)), Wf - w)
    dy, dx = tf.maximum(Hf - 1.0, 1.0), tf.maximum(Wf - 1.0, 1.0)
    boxes = tf.stack([top / dy, left / dx, (top + h - 1.0) / dy, (left + w - 1.0) / dx], axis=1)
    y = tf.image.crop_and_resize(x, boxes, tf.range(n), tf.stack(out_hw), method="bilinear")
    return _out(_clip(y), single)


def adjust_brightness(x, factor) -> tf.Tensor:
    """``clip(factor x)``, ``factor`` a scalar or ``[B]`` (torchvision ``adjust_brightness``)."""
    x, single = _batch(x)
    f = tf.reshape(tf.cast(factor, tf.float32), [-1, 1, 1, 1])
    return _out(_clip(f * x), single)


def adjust_contrast(x, factor) -> tf.Tensor:
    """``clip(c x + (1 - c) m)``, ``m`` the mean grey level of each image (torchvision ``adjust_contrast``)."""
    x, single = _batch(x)
    c = tf.reshape(tf.cast(factor, tf.float32), [-1, 1, 1, 1])
    m = tf.reduce_mean(_grey(x), axis=[1, 2, 3], keepdims=True)
    return _out(_clip(c * x + (1.0 - c) * m), single)


def adjust_saturation(x, factor) -> tf.Tensor:
    """``clip(s x + (1 - s) grey(x))`` per pixel (torchvision ``adjust_saturation``)."""
    x, single = _batch(x)
    s = tf.reshape(tf.cast(factor, tf.float32), [-1, 1, 1, 1])
    return _out(_clip(s * x + (1.0 - s) * _grey(x)), single)


def jitter_factors(seed, n, brightness: Range | None = (0.3, 1.7), contrast: Range | None = (0.3, 1.7),
                   saturation: Range | None = (0.3, 1.7)) -> dict:
    """The per-image factors :func:`color_jitter` draws: ``{"brightness": [n], ...}`` (None ranges left out).

    Factor ``k`` (0 brightness, 1 contrast, 2 saturation) comes from
    ``sub_seed(seed, k)``, so switching one off does not change the others.
    """
    out = {}
    for k, (name, r) in enumerate((("brightness", brightness), ("contrast", contrast), ("saturation", saturation))):
        if r is not None:
            out[name] = _uniform(sub_seed(seed, k), n, r[0], r[1])
    return out


def color_jitter(x, seed, brightness: Range | None = (0.3, 1.7), contrast: Range | None = (0.3, 1.7),
                 saturation: Range | None = (0.3, 1.7)) -> tf.Tensor:
    """Brightness, then contrast, then saturation, each by a factor uniform in its range (per image).

    torchvision's formulas on [0, 255] floats, clipped after each step (see
    :func:`adjust_brightness`, :func:`adjust_contrast`, :func:`adjust_saturation`).
    torchvision's ``ColorJitter`` applies the steps in a random order per call and
    takes ``brightness=0.7`` for the range ``[0.3, 1.7]``; here the order is fixed
    and the range is given directly.  A range of ``None`` skips that step.
    Factors: :func:`jitter_factors`.
    """
    x, single = _batch(x)
    f = jitter_factors(seed, tf.shape(x)[0], brightness, contrast, saturation)
    if "brightness" in f:
        x = adjust_brightness(x, f["brightness"])
    if "contrast" in f:
        x = adjust_contrast(x, f["contrast"])
    if "saturation" in f:
        x = adjust_saturation(x, f["saturation"])
    return _out(x, single)


def to_grayscale3(x, seed=None) -> tf.Tensor:
    """Grey level ``0.299 R + 0.587 G + 0.114 B`` (float, not rounded) repeated in 3 channels (``seed`` unused)."""
    x, single = _batch(x)
    return _out(tf.tile(_grey(x), [1, 1, 1, 3]), single)


def brightness_jitter(x, seed, amount: float = 0.5) -> tf.Tensor:
    """Brightness factor uniform in ``[max(0, 1 - amount), 1 + amount]`` per image (torchvision
    ``ColorJitter(brightness=amount)``)."""
    x, single = _batch(x)
    f = _uniform(seed, tf.shape(x)[0], max(0.0, 1.0 - amount), 1.0 + amount)
    return _out(adjust_brightness(x, f), single)


def adjust_hue(x, delta) -> tf.Tensor:
    """Shift the hue of each image by ``delta`` turns (a scalar or ``[B]``, in [-0.5, 0.5]): RGB -> HSV,
    ``h = (h + delta) mod 1``, -> RGB, on [0, 255] floats (torchvision ``adjust_hue`` on float images)."""
    x, single = _batch(x)
    d = tf.reshape(tf.cast(delta, tf.float32), [-1, 1, 1])
    hsv = tf.image.rgb_to_hsv(x / 255.0)
    h = tf.math.floormod(hsv[..., 0] + d, 1.0)
    rgb = tf.image.hsv_to_rgb(tf.stack([h, hsv[..., 1], hsv[..., 2]], axis=-1))
    return _out(_clip(rgb * 255.0), single)


def brightness_hue_jitter(x, seed, brightness: float = 0.5, hue: float = 0.3) -> tf.Tensor:
    """torchvision ``ColorJitter(brightness=brightness, hue=hue)``, per image: a brightness factor uniform in
    ``[max(0, 1 - brightness), 1 + brightness]`` (``sub_seed(seed, 0)``), a hue shift uniform in
    ``[-hue, hue]`` turns (``sub_seed(seed, 1)``), applied in a random order (``sub_seed(seed, 2)``: brightness
    first with probability 1/2, as torchvision's random permutation of the steps)."""
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    x, single = _batch(x)
    n = tf.shape(x)[0]
    f = _uniform(sub_seed(seed, 0), n, max(0.0, 1.0 - brightness), 1.0 + brightness)
    d = _uniform(sub_seed(seed, 1), n, -hue, hue)
    brightness_first = (_uniform(sub_seed(seed, 2), n, 0.0, 1.0) < 0.5)[:, None, None, None]
    a = adjust_hue(adjust_brightness(x, f), d)
    b = adjust_brightness(adjust_hue(x, d), f)
    return _out(tf.where(brightness_first, a, b), single)


def gaussian_kernel1d(size: int, sigma) -> tf.Tensor:
    """``[B, size]`` normalised Gaussian weights at ``-(size-1)/2 .. (size-1)/2`` for each sigma of ``[B]``
    (torchvision ``_get_gaussian_kernel1d``)."""
    t = tf.linspace(-(size - 1) / 2.0, (size - 1) / 2.0, size)
    s = tf.reshape(tf.cast(sigma, tf.float32), [-1, 1])
    w = tf.exp(-0.5 * tf.square(t[None, :] / s))
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def gaussian_blur(x, seed, kernel_size: tuple[int, int] = (5, 9), sigma: Range = (0.1, 5.0)) -> tf.Tensor:
    """torchvision ``GaussianBlur(kernel_size=(kx, ky), sigma=sigma)``, per image: one sigma uniform in
    ``sigma`` for both axes, a separable kernel ``kx`` wide and ``ky`` high, the image padded by reflection
    (``kx // 2`` columns, ``ky // 2`` rows each side); on [0, 255] floats, not rounded."""
    kx, ky = int(kernel_size[0]), int(kernel_size[1])
    if kx < 1 or ky < 1 or kx % 2 == 0 or ky % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    if not 0.0 < sigma[0] <= sigma[1]:
        raise ValueError(f"sigma must satisfy 0 < lo <= hi, got {sigma}")
    x, single = _batch(x)
    shape = tf.shape(x)
    H, W = shape[1], shape[2]
    s = _uniform(seed, shape[0], sigma[0], sigma[1])
    wx, wy = gaussian_kernel1d(kx, s), gaussian_kernel1d(ky, s)
    p = tf.pad(x, [[0, 0], [0, 0], [kx // 2, kx // 2], [0, 0]], mode="REFLECT")
    y = tf.add_n([wx[:, j, None, None, None] * p[:, :, j:j + W] for j in range(kx)])
    p = tf.pad(y, [[0, 0], [ky // 2, ky // 2], [0, 0], [0, 0]], mode="REFLECT")
    y = tf.add_n([wy[:, i, None, None, None] * p[:, i:i + H] for i in range(ky)])
    return _out(_clip(y), single)


def posterize(x, bits: int = 2, seed=None) -> tf.Tensor:
    """Keep the ``bits`` high bits of each uint8 value (float input rounded first): ``v & ~(2**(8-bits) - 1)``."""
    if not 1 <= int(bits) <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    x, single = _batch(x)
    mask = tf.constant((0xFF << (8 - int(bits))) & 0xFF, tf.uint8)
    return _out(tf.cast(tf.bitwise.bitwise_and(_to_uint8(x), mask), tf.float32), single)


def equalize(x, seed=None) -> tf.Tensor:
    """Histogram equalisation per image and channel, PIL ``ImageOps.equalize`` / torchvision ``equalize``.

    For one channel (uint8 values, float input rounded first) with histogram
    ``h[0..255]``: let ``last`` be the count of the highest non-empty bin and
    ``step = (sum(h) - last) // 255``; if ``step == 0`` the channel is unchanged,
    otherwise ``lut[i] = min(255, (step // 2 + sum(h[:i])) // step)`` and
    ``v -> lut[v]``.  (PIL builds the same table; torchvision clamps to 255.)
    """
    x, single = _batch(x)
    u = _to_uint8(x)
    shape = tf.shape(u)
    n, H, W = shape[0], shape[1], shape[2]
    v = tf.reshape(tf.transpose(tf.cast(u, tf.int32), [0, 3, 1, 2]), [n * 3, H * W])  # one row per channel
    hist = tf.math.bincount(v, minlength=256, maxlength=256, axis=-1, dtype=tf.int32)  # [n*3, 256]
    bins = tf.range(256, dtype=tf.int32)
    last_bin = tf.reduce_max(tf.where(hist > 0, bins[None], -1), axis=1)  # highest non-empty bin
    last = tf.gather(hist, tf.maximum(last_bin, 0), batch_dims=1)
    step = (tf.reduce_sum(hist, axis=1) - last) // 255  # [n*3]
    before = tf.cumsum(hist, axis=1, exclusive=True)
    safe = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((step[:, None] // 2 + before) // safe, 255)
    lut = tf.where(step[:, None] > 0, lut, bins[None])
    y = tf.gather(lut, v, batch_dims=1)
    y = tf.transpose(tf.reshape(y, [n, 3, H, W]), [0, 2, 3, 1])
    return _out(tf.cast(y, tf.float32), single)


def hflip(x, seed=None) -> tf.Tensor:
    """Mirror left-right (``seed`` unused)."""
    x, single = _batch(x)
    return _out(tf.reverse(x, axis=[2]), single)


# --------------------------------------------------------------------------- policies
def autocontrast(x, seed=None) -> tf.Tensor:
    """Per image and channel, stretch ``[min, max]`` to ``[0, 255]`` (channels with ``max == min`` unchanged),
    rounded down as torchvision's ``autocontrast`` on uint8 images (its float result cast back)."""
    x, single = _batch(x)
    lo = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(x, axis=[1, 2], keepdims=True)
    flat = tf.equal(hi, lo)
    scale = tf.where(flat, 1.0, 255.0 / tf.where(flat, 1.0, hi - lo))
    y = tf.where(flat, x, tf.floor(_clip((x - lo) * scale)))
    return _out(y, single)


def with_probability(op: Callable, prob: float) -> Callable:
    """``op`` applied to each image with probability ``prob`` (torchvision's ``Random*`` transforms, p = 0.5),
    the others left as they are; the coin uses ``sub_seed(seed, 0)``, the op ``sub_seed(seed, 1)``."""
    def apply(x, seed):
        x, single = _batch(x)
        y = op(x, sub_seed(seed, 1))
        pick = _uniform(sub_seed(seed, 0), tf.shape(x)[0], 0.0, 1.0) < prob
        return _out(tf.where(pick[:, None, None, None], y, x), single)
    return apply


class Report003Augment:
    """Report 003's five torchvision transforms, *one at a time*, the original image as one of the choices.

    The report multiplies its training set 6x: the originals plus one copy through each of five
    transforms, never composed (``"compose_augmentations": False``). Its list, in its order:
    ``Grayscale(3)``; ``ColorJitter(brightness=.5, hue=.3)``; ``GaussianBlur(kernel_size=(5, 9),
    sigma=(0.1, 5.))``; ``RandomPosterize(bits=2)`` and ``RandomEqualize()``, the last two with torchvision's
    default p = 0.5 (half of their copies stay unchanged, as in the report's set). The text file of the
    report cuts the list off; the complete list is in the report's Markdown export (docs/experiments/arcface.md).

    Called as a policy, it draws per image one of six: the original (choice 0) or op ``k`` (choice
    ``k + 1``), uniformly, so an epoch sees each variant with the probability it has in the 6x set.
    :meth:`apply_choices` applies given choices: the classification trainer's ``--augment-fixed-set`` plans
    every (image, variant) pair once per epoch, the fixed 6x set itself; :meth:`variants` gives all six of
    every image. Op ``i`` runs with ``sub_seed(seed, i + 1)``; the random choice of image ``b`` is
    ``choices(seed, B)[b]`` (from ``sub_seed(seed, 0)``). Every op runs on the whole batch and each image
    keeps the one output it was assigned. ``ops`` replaces the five (e.g. with :func:`autocontrast`).
    """

    def __init__(self, brightness: float = 0.5, hue: float = 0.3, blur_kernel: tuple[int, int] = (5, 9),
                 blur_sigma: Range = (0.1, 5.0), bits: int = 2, prob: float = 0.5,
                 ops: Sequence[tuple[str, Callable]] | None = None, include_original: bool = True):
        if ops is None:
            kx, ky = blur_kernel
            ops = (
                ("greyscale", to_grayscale3),
                (f"jitter b {brightness:g} h {hue:g}", lambda x, s: brightness_hue_jitter(x, s, brightness, hue)),
                (f"blur {kx}x{ky} s {blur_sigma[0]:g}-{blur_sigma[1]:g}",
                 lambda x, s: gaussian_blur(x, s, blur_kernel, blur_sigma)),
                (f"posterize {bits} bits p {prob:g}", with_probability(lambda x, s: posterize(x, bits), prob)),
                (f"equalize p {prob:g}", with_probability(equalize, prob)),
            )
        self._ops = list(ops)
        self.include_original = bool(include_original)
        self.name = "report003"

    def ops(self) -> list[tuple[str, Callable]]:
        """``(name, fn(x, seed))`` of each single op, in choice order (after the original)."""
        return list(self._ops)

    @property
    def copies(self) -> int:
        """Variants of each image: the original (when included) and one per op (6 by default)."""
        return len(self._ops) + int(self.include_original)

    def choices(self, seed, n) -> tf.Tensor:
        """int32 ``[n]``: 0 = the original, ``k + 1`` = op ``k`` (without originals: op ``k`` is ``k``)."""
        return tf.random.stateless_uniform([n], seed=sub_seed(seed, 0), minval=0, maxval=self.copies,
                                           dtype=tf.int32)

    def variants(self, x, seed) -> tf.Tensor:
        """float32 ``[1 + n_ops, B, H, W, 3]``: the originals, then every op's copy (the fixed 6x set)."""
        x, _ = _batch(x)
        return tf.stack([x] + [fn(x, sub_seed(seed, i + 1)) for i, (_, fn) in enumerate(self._ops)])

    def apply_choices(self, x, choices, seed) -> tf.Tensor:
        """Image ``b`` through variant ``choices[b]`` (numbered as :meth:`choices`), ops seeded from ``seed``."""
        x, single = _batch(x)
        outs = self.variants(x, seed)
        if not self.include_original:
            outs = outs[1:]
        k = tf.reshape(tf.cast(choices, tf.int32), [-1])
        y = tf.gather(tf.transpose(outs, [1, 0, 2, 3, 4]), k, batch_dims=1)
        return _out(y, single)

    def __call__(self, x, seed) -> tf.Tensor:
        x, single = _batch(x)
        return _out(self.apply_choices(x, self.choices(seed, tf.shape(x)[0]), seed), single)


class Report001Augment:
    """Report 001: random resized crop (area 0.8–1.0) then colour jitter (factors in [0.3, 1.7]).

    ``crop`` / ``jitter`` switch each part (the report's ablation: none, crop,
    jitter, both).  The crop uses ``sub_seed(seed, 1)``, the jitter
    ``sub_seed(seed, 2)``.
    """

    def __init__(self, crop: bool = True, jitter: bool = True, scale: Range = (0.8, 1.0),
                 brightness: Range | None = (0.3, 1.7), contrast: Range | None = (0.3, 1.7),
                 saturation: Range | None = (0.3, 1.7)):
        self.crop, self.jitter = bool(crop), bool(jitter)
        self.scale = tuple(scale)
        self.jitter_ranges = dict(brightness=brightness, contrast=contrast, saturation=saturation)
        self.name = "report001-" + {(False, False): "none", (True, False): "crop", (False, True): "jitter",
                                    (True, True): "both"}[(self.crop, self.jitter)]

    def _crop(self, x, seed):
        return random_resized_crop(x, seed, self.scale)

    def _jitter(self, x, seed):
        return color_jitter(x, seed, **self.jitter_ranges)

    def ops(self) -> list[tuple[str, Callable]]:
        """The single parts and the whole policy, each as ``(name, fn(x, seed))`` (for grids)."""
        lo, hi = self.scale
        return [(f"crop {lo:g}-{hi:g}", lambda x, s: self._crop(x, sub_seed(s, 1))),
                ("colour jitter", lambda x, s: self._jitter(x, sub_seed(s, 2))),
                ("crop + jitter", Report001Augment(True, True, self.scale, **self.jitter_ranges))]

    def __call__(self, x, seed) -> tf.Tensor:
        x, single = _batch(x)
        if self.crop:
            x = self._crop(x, sub_seed(seed, 1))
        if self.jitter:
            x = self._jitter(x, sub_seed(seed, 2))
        return _out(x, single)


def _affine(x, a, b) -> tf.Tensor:
    """Per-image affine resampling: output pixel ``(col, row)`` reads input ``(a . (col, row, 1), b . (...))``.

    ``a``, ``b``: float32 ``[B, 3]``; bilinear, pixels outside the image are 0.
    """
    n = tf.shape(x)[0]
    transforms = tf.concat([a, b, tf.zeros([n, 2], tf.float32)], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")


def _centre(x):
    shape = tf.shape(x)
    return (tf.cast(shape[2], tf.float32) - 1.0) / 2.0, (tf.cast(shape[1], tf.float32) - 1.0) / 2.0


def random_flip(x, seed, prob: float = 0.5) -> tf.Tensor:
    """Mirror each image left-right with probability ``prob`` (``tf.image.random_flip_left_right``)."""
    x, single = _batch(x)
    flip = _uniform(seed, tf.shape(x)[0], 0.0, 1.0) < prob
    return _out(tf.where(flip[:, None, None, None], tf.reverse(x, axis=[2]), x), single)


def random_rotate(x, seed, max_degrees: float = 40.0) -> tf.Tensor:
    """Rotate each image about its centre by an angle uniform in ``[-max_degrees, max_degrees]``, same size,
    corners filled with black (scipy ``misc.imrotate``, which report 002's code calls; bilinear here, bicubic
    there)."""
    x, single = _batch(x)
    theta = _uniform(seed, tf.shape(x)[0], -max_degrees, max_degrees) * (np.pi / 180.0)
    cx, cy = _centre(x)
    c, s = tf.cos(theta), tf.sin(theta)
    a = tf.stack([c, -s, cx - c * cx + s * cy], axis=1)
    b = tf.stack([s, c, cy - s * cx - c * cy], axis=1)
    return _out(_clip(_affine(x, a, b)), single)


def random_scale(x, seed, prob: float = 0.4, up: Range = (1.0, 1.25), down: Range = (0.7, 1.0)) -> tf.Tensor:
    """Report 002's random scale: with probability ``prob`` an image is resized by factors ``(f_h, f_w)``
    about its centre and cropped or zero-padded back to its size (``resize_image_with_crop_or_pad``).

    As in its code, the factors are drawn once per *batch* and independently for height and width: one
    pair in ``up`` (zoom in) and one in ``down`` (zoom out, black border); each scaled image takes the up
    pair or the down pair with probability 1/2.
    """
    x, single = _batch(x)
    n = tf.shape(x)[0]
    f = tf.random.stateless_uniform([4], seed=sub_seed(seed, 0), dtype=tf.float32)
    up_hw = up[0] + (up[1] - up[0]) * f[:2]
    down_hw = down[0] + (down[1] - down[0]) * f[2:]
    u = tf.random.stateless_uniform([n, 2], seed=sub_seed(seed, 1), dtype=tf.float32)
    fac = tf.where(u[:, :1] > 0.5, up_hw[None], down_hw[None])  # [B, 2] (h, w)
    cx, cy = _centre(x)
    fh, fw = fac[:, 0], fac[:, 1]
    zeros = tf.zeros_like(fh)
    a = tf.stack([1.0 / fw, zeros, cx - cx / fw], axis=1)
    b = tf.stack([zeros, 1.0 / fh, cy - cy / fh], axis=1)
    scaled = _clip(_affine(x, a, b))
    keep = u[:, 1] > prob  # the code keeps the original when uniform > 0.4
    return _out(tf.where(keep[:, None, None, None], x, scaled), single)


def colour_shift(x, seed, brightness: float = 32.0, saturation: Range = (0.75, 1.25),
                 hue: float = 0.05) -> tf.Tensor:
    """``tf.image.random_brightness`` (add ``U(-brightness, brightness)`` on the 0-255 scale),
    ``random_saturation`` (factor in ``saturation``), ``random_hue`` (shift ``U(-hue, hue)`` of a turn),
    then clip: report 002's code, whose ``random_*`` calls on a batch draw *one* value for the whole batch
    (so does this)."""
    x, single = _batch(x)
    u = tf.random.stateless_uniform([3], seed=_seed2(seed), dtype=tf.float32)
    y = x / 255.0 + (2.0 * u[0] - 1.0) * (brightness / 255.0)
    y = tf.image.adjust_saturation(y, saturation[0] + (saturation[1] - saturation[0]) * u[1])
    y = tf.image.adjust_hue(y, (2.0 * u[2] - 1.0) * hue)
    return _out(_clip(y * 255.0), single)


def random_channel_mean_grey(x, seed, prob: float = 0.2, source=None) -> tf.Tensor:
    """With probability ``prob`` per image, the mean of the three channels in all three (report 002's
    grey: ``reduce_mean`` over channels, not luma); ``source``: the images the grey is taken from
    (report 002's code takes it *before* its colour shift), default ``x``."""
    x, single = _batch(x)
    src = x if source is None else _batch(source)[0]
    grey = tf.tile(tf.reduce_mean(src, axis=-1, keepdims=True), [1, 1, 1, 3])
    pick = _uniform(seed, tf.shape(x)[0], 0.0, 1.0) < prob
    return _out(tf.where(pick[:, None, None, None], grey, x), single)


def _band_mask(seed, H, W):
    """One seaweed band ``[H, W]`` (1 = keep): rows or columns ``[start, start + L * side // 5)``,
    ``L`` in {1, 2}, ``start`` in ``[0, 3 * side // 5 - 1)``, rows or columns with probability 1/2."""
    u = tf.random.stateless_uniform([4], seed=_seed2(seed), dtype=tf.float32)
    length = tf.floor(u[0] * 2.0) + 1.0
    vh, vw = tf.floor(tf.cast(H, tf.float32) / 5.0), tf.floor(tf.cast(W, tf.float32) / 5.0)
    start_h = tf.floor(u[1] * tf.maximum(3.0 * vh - 1.0, 1.0))
    start_w = tf.floor(u[2] * tf.maximum(3.0 * vw - 1.0, 1.0))
    rows = tf.cast(tf.range(H), tf.float32)[:, None] * tf.ones([1, W])
    cols = tf.cast(tf.range(W), tf.float32)[None, :] * tf.ones([H, 1])
    in_rows = (rows >= start_h) & (rows < start_h + length * vh)
    in_cols = (cols >= start_w) & (cols < start_w + length * vw)
    return tf.cast(tf.logical_not(tf.where(u[3] > 0.5, in_rows, in_cols)), tf.float32)


def seaweed_bands(x, seed, prob: float = 0.7, two_band_prob: float = 0.25, fill: float = 127.5) -> tf.Tensor:
    """Report 002's "seaweed": a band of rows or columns, 1/5 or 2/5 of the side, set to ``fill``.

    As its code (``np_seaweed_augment``, applied to the whole batch through ``py_func``): two bands are
    drawn per *batch*; an image is left alone with probability ``1 - prob``, else gets the first band
    (probability ``1 - two_band_prob``) or both. The code zeroes the network's ``[-1, 1]`` input, which is
    mid grey, ``fill = 127.5`` on this module's 0-255 scale (``normalize_faces`` maps it to 0).
    """
    x, single = _batch(x)
    shape = tf.shape(x)
    n, H, W = shape[0], shape[1], shape[2]
    m1 = _band_mask(sub_seed(seed, 0), H, W)
    m2 = m1 * _band_mask(sub_seed(seed, 1), H, W)
    u = tf.random.stateless_uniform([n, 2], seed=sub_seed(seed, 2), dtype=tf.float32)
    mask = tf.where((u[:, 1] > two_band_prob)[:, None, None], m1[None], m2[None])
    mask = tf.where((u[:, 0] > 1.0 - prob)[:, None, None], mask, tf.ones_like(mask))[..., None]
    return _out(x * mask + fill * (1.0 - mask), single)


class BasicAugment:
    """Report 002's augmentations as its ``data_reader.py`` applies them (``augmentation_level`` 1 and 2).

    In order: :func:`random_flip` (p 0.5), :func:`random_rotate` (+-40 degrees), :func:`random_scale`
    (p 0.4; up 1-1.25 or down 0.7-1), the grey copy of that, :func:`colour_shift` (brightness +-32,
    saturation 0.75-1.25, hue +-0.05), :func:`random_channel_mean_grey` (p 0.2, the grey copy taken before
    the colour shift); with ``seaweed=True`` (level 2) then :func:`seaweed_bands` (p 0.7, a quarter of them
    with two bands). Part ``k`` in that list (1-based) runs with ``sub_seed(seed, k)``.

    ``flip=False`` leaves the flip out (the other parts draw as they would with it): for training that
    mirrors faces itself, e.g. embedding distillation, whose mirrored faces need the mirrored chip's target.
    """

    def __init__(self, seaweed: bool = False, flip: bool = True):
        self.seaweed = bool(seaweed)
        self.flip = bool(flip)
        self.name = "basic-seaweed" if self.seaweed else "basic"

    def ops(self) -> list[tuple[str, Callable]]:
        """The single parts, each as ``(name, fn(x, seed))`` with the seed the policy gives it (for grids)."""
        parts = [("flip p .5", lambda x, s: random_flip(x, sub_seed(s, 1)))] if self.flip else []
        parts += [("rotate +-40", lambda x, s: random_rotate(x, sub_seed(s, 2))),
                 ("scale p .4", lambda x, s: random_scale(x, sub_seed(s, 3))),
                 ("colour shift", lambda x, s: colour_shift(x, sub_seed(s, 4))),
                 ("grey p .2", lambda x, s: random_channel_mean_grey(x, sub_seed(s, 5)))]
        if self.seaweed:
            parts.append(("seaweed p .7", lambda x, s: seaweed_bands(x, sub_seed(s, 6))))
        return parts

    def __call__(self, x, seed) -> tf.Tensor:
        x, single = _batch(x)
        if self.flip:
            x = random_flip(x, sub_seed(seed, 1))
        x = random_rotate(x, sub_seed(seed, 2))
        x = random_scale(x, sub_seed(seed, 3))
        before = x
        x = colour_shift(x, sub_seed(seed, 4))
        x = random_channel_mean_grey(x, sub_seed(seed, 5), source=before)
        if self.seaweed:
            x = seaweed_bands(x, sub_seed(seed, 6))
        return _out(x, single)


class _NoAugment:
    name = "none"

    def ops(self):
        return []

    def __call__(self, x, seed=None):
        return tf.cast(tf.convert_to_tensor(x), tf.float32)


AUGMENTATIONS = ("none", "report001-crop", "report001-jitter", "report001-both", "report003", "basic",
                 "basic-seaweed")


def make_augment(name: str, **kwargs) -> Callable:
    """A policy ``f(images, seed) -> float32 [0, 255]`` by name (one of :data:`AUGMENTATIONS`).

    ``kwargs`` go to :class:`Report001Augment` (``scale``, ``brightness``, ...) or
    :class:`Report003Augment` (``brightness``, ``hue``, ``blur_kernel``, ``blur_sigma``, ``bits``, ``ops``)
    or :class:`BasicAugment` (``flip``).
    """
    if name == "none":
        return _NoAugment()
    if name.startswith("report001-"):
        part = name.split("-", 1)[1]
        if part not in ("crop", "jitter", "both"):
            raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")
        return Report001Augment(crop=part in ("crop", "both"), jitter=part in ("jitter", "both"), **kwargs)
    if name == "report003":
        return Report003Augment(**kwargs)
    if name in ("basic", "basic-seaweed"):
        return BasicAugment(seaweed=name == "basic-seaweed", **kwargs)
    raise ValueError(f"unknown augmentation {name!r}; choose from {AUGMENTATIONS}")


def augment_dataset(ds: tf.data.Dataset, policy: Callable, seed: int = 0) -> tf.data.Dataset:
    """Map ``policy`` over a dataset of image batches ``x`` or ``(x, y, ...)`` tuples (the first element is augmented).

    Each batch gets its own int64 seed from ``tf.data.Dataset.random(seed,
    rerandomize_each_iteration=True)`` (as :class:`~kerasface.data.PairData` does):
    deterministic for ``seed``, different in every epoch.
    """
    rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def apply(elem, r):
        if isinstance(elem, tuple):
            return (policy(elem[0], r),) + tuple(elem[1:])
        return policy(elem, r)

    return tf.data.Dataset.zip((ds, rnd)).map(apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# --------------------------------------------------------------------------- grid
def save_augment_grid(images, path: str | os.PathLike, policy: str | Callable, seed: int = 0,
                      title: str | None = None) -> str:
    """Write a PNG: the original images on the top row, then one row per op of ``policy`` and one for the policy itself.

    ``images`` uint8 ``[B, H, W, 3]``; ``policy`` a name for :func:`make_augment`
    or a policy object with ``ops()``.  Every row uses the batch seed ``seed``.
    Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pol = make_augment(policy) if isinstance(policy, str) else policy
    imgs = np.asarray(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise ValueError(f"expected images [B, H, W, 3], got {imgs.shape}")
    rows = [("original", imgs.astype(np.float32))]
    for name, fn in pol.ops() if hasattr(pol, "ops") else []:
        if isinstance(fn, Report001Augment):
            continue  # the whole policy row is added below
        rows.append((name, fn(imgs, seed).numpy()))
    rows.append((f"{getattr(pol, 'name', 'policy')} (policy)", pol(imgs, seed).numpy()))
    labels = None
    if isinstance(pol, Report003Augment):
        names = (["original"] if pol.include_original else []) + [n for n, _ in pol.ops()]
        labels = [names[k] for k in pol.choices(seed, len(imgs)).numpy()]
    n = imgs.shape[0]
    fig = Figure(figsize=(1.5 * n, 1.5 * len(rows) + (0.4 if title else 0.1)), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (name, arr) in enumerate(rows):
        for j in range(n):
            ax = axes[r, j]
            ax.imshow(np.clip(arr[j], 0, 255).astype(np.uint8))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
            if labels is not None and r == len(rows) - 1:
                ax.set_xlabel(labels[j], fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
