"""Training pairs/s and inference images/s of the VarGFaceNet Siamese verifier.

    python benchmarks/bench_verifier.py [--backbone vargfacenet] [--batch 32] [--steps 5]

Uses real LFW faces from the bundled sample (data/lfw_sample) at 112x112.
The first training step (graph tracing) is reported separately from the
steady-state steps.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import numpy as np

from kerasface.data import PairData, parse_pairs
from kerasface.data.locations import bundled_sample_dir
from kerasface.presets import get_pair_preset
from kerasface.training import build_verifier


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vargfacenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--group-conv", default="auto")
    args = ap.parse_args()
    sample = bundled_sample_dir()
    data = PairData.from_pairs(parse_pairs(sample / "pairsTrain.txt"), sample, progress=False)
    ds = data.dataset(batch_size=args.batch, shuffle=False, drop_remainder=True, repeat=True)
    (a, b), y = next(iter(ds))
    a, b, y = a.numpy(), b.numpy(), y.numpy()
    cfg = get_pair_preset("vargface").override(backbone=args.backbone, group_conv=args.group_conv)
    model = build_verifier(cfg)

    t0 = time.perf_counter()
    model.train_on_batch([a, b], y)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch([a, b], y)
    step = (time.perf_counter() - t0) / args.steps

    backbone = model.get_layer(args.backbone)
    images = np.concatenate([a, b])
    backbone.predict(images, batch_size=args.batch * 2, verbose=0)  # trace
    t0 = time.perf_counter()
    for _ in range(args.steps):
        backbone.predict(images, batch_size=args.batch * 2, verbose=0)
    infer = (time.perf_counter() - t0) / args.steps

    out = {
        "backbone": args.backbone,
        "group_conv": args.group_conv,
        "batch_pairs": args.batch,
        "first_train_step_s": round(first, 1),
        "train_step_s": round(step, 3),
        "train_pairs_per_s": round(args.batch / step, 2),
        "inference_images_per_s": round(len(images) / infer, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
