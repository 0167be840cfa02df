"""``kerasface lowlight-grid``: a PNG of faces next to their low-light versions."""

from __future__ import annotations

import argparse

import numpy as np

__all__ = ["HELP", "add_arguments", "run"]

HELP = "PNG of faces next to their low-light versions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="LFW folder or zip (default: the bundled sample)")
    p.add_argument("--out", default="lowlight_grid.png", help="PNG to write (default lowlight_grid.png)")
    p.add_argument("-n", type=int, default=6, help="number of faces (default 6)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the low-light transform (default 1234)")


def run(args: argparse.Namespace) -> int:
    # here, not at the top: kerasface.data's image functions import OpenCV and TensorFlow
    from kerasface.data import load_images, open_image_source, save_lowlight_grid
    from kerasface.data.locations import bundled_sample_dir

    source = open_image_source(args.data or bundled_sample_dir())
    names = sorted(source.list_images())
    picks = [names[i] for i in np.linspace(0, len(names) - 1, args.n).astype(int)]
    images, _ = load_images(source, picks, size=112, progress=False)
    save_lowlight_grid(images, args.out, seed=args.seed,
                       title="LFW faces (top) and their low-light versions (bottom)")
    print(f"wrote {args.out}")
    return 0
