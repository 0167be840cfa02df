"""Synthetic low-light version of a face data set (the report's low-light experiment).

Each image ``x`` (float32 RGB in [0, 1]) is darkened as::

    y = clip(b * x ** g + sigma * n, 0, 1)

with, per image,

* gamma      ``g     ~ U(gamma)``      (default U(2.0, 3.0)): crushes mid-tones and shadows,
* brightness ``b     ~ U(brightness)`` (default U(0.35, 0.6)): global exposure drop,
* noise      ``sigma ~ U(noise_std)``  (default U(0.01, 0.03)) and ``n ~ N(0, 1)`` i.i.d.
  per pixel and channel: sensor noise, which dominates once the signal is dark.

All draws use ``tf.random.stateless_*`` ops keyed by ``(seed, image_id)``, so an
image always receives the same darkening, whatever batch it is in and however
often it is read: the low-light set is a fixed property of the data, not an
augmentation.  ``low_light`` uses only TensorFlow ops and can run inside
``tf.data.Dataset.map``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from kerasface.io import save_figure

__all__ = ["low_light", "save_lowlight_grid"]

Range = tuple[float, float]


def _darken_one(x: tf.Tensor, key: tf.Tensor, gamma: Range, brightness: Range, noise_std: Range) -> tf.Tensor:
    """Darken one image ``[H, W, 3]`` with the stateless seed ``key`` (int64 [2])."""
    k_params, k_noise = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
    u = tf.random.stateless_uniform([3], seed=k_params, dtype=tf.float32)
    g = gamma[0] + (gamma[1] - gamma[0]) * u[0]
    b = brightness[0] + (brightness[1] - brightness[0]) * u[1]
    sigma = noise_std[0] + (noise_std[1] - noise_std[0]) * u[2]
    n = tf.random.stateless_normal(tf.shape(x), seed=k_noise, dtype=tf.float32)
    return tf.clip_by_value(b * tf.pow(x, g) + sigma * n, 0.0, 1.0)


def low_light(images, seed, image_ids, gamma: Range = (2.0, 3.0), brightness: Range = (0.35, 0.6),
              noise_std: Range = (0.01, 0.03)) -> tf.Tensor:
    """Apply the deterministic low-light transform (formula in the module docstring).

    ``images``: float ``[B, H, W, 3]`` in [0, 1] with ``image_ids`` int ``[B]``, or
    one image ``[H, W, 3]`` with a scalar id (uint8 input is scaled to [0, 1]).
    ``seed``: int (or scalar tensor) selecting the low-light variant of the set.
    Returns float32 of the same shape, in [0, 1].
    """
    x = tf.convert_to_tensor(images)
    x = tf.image.convert_image_dtype(x, tf.float32) if x.dtype == tf.uint8 else tf.cast(x, tf.float32)
    ids = tf.cast(tf.convert_to_tensor(image_ids), tf.int64)
    s = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    ranges = (tuple(map(float, gamma)), tuple(map(float, brightness)), tuple(map(float, noise_std)))
    if x.shape.rank == 3:
        return _darken_one(x, tf.stack([s, tf.reshape(ids, [])]), *ranges)
    if x.shape.rank != 4:
        raise ValueError(f"low_light expects [H, W, 3] or [B, H, W, 3] images, got shape {x.shape}")
    ids = tf.reshape(ids, [-1])
    keys = tf.stack([tf.fill(tf.shape(ids), s), ids], axis=1)  # [B, 2]
    return tf.map_fn(lambda a: _darken_one(a[0], a[1], *ranges), (x, keys), fn_output_signature=tf.float32)


def save_lowlight_grid(images_uint8, path: str | os.PathLike, seed: int = 0, ids: Sequence[int] | None = None,
                       title: str | None = None) -> str:
    """Write a PNG grid: the original uint8 images on the top row, their low-light versions below.

    ``ids`` (default ``0..B-1``) are the image ids used as low-light keys.  Uses
    matplotlib's Agg canvas (no display needed).  Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    imgs = np.asarray(images_uint8)
    if imgs.ndim == 3:
        imgs = imgs[None]
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {imgs.dtype} {imgs.shape}")
    n = imgs.shape[0]
    ids = np.arange(n) if ids is None else np.asarray(ids)
    dark = low_light(imgs.astype(np.float32) / 255.0, seed, ids).numpy()

    fig = Figure(figsize=(1.8 * n, 3.9 if title else 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for j in range(n):
        for r, (im, lab) in enumerate(((imgs[j], "original"), (dark[j], "low-light"))):
            ax = axes[r, j]
            ax.imshow(im, vmin=0, vmax=1 if r else 255)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(lab)
            if r == 1:
                ax.set_xlabel(f"mean {im.mean():.2f} (was {imgs[j].mean() / 255:.2f})", fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
