"""Wall time of a full LFW evaluation: 6,000 pairs of 112x112 faces through VarGFaceNet.

    python benchmarks/bench_evaluate.py [--data ../shared/data/lfw] [--pairs pairs.txt]
                                        [--backbone vargfacenet] [--flip] [--batch 64]

Runs :func:`kerasface.evaluation.evaluate_pairs` with a freshly initialised
backbone as the embedding model (the weights do not change the cost) on the
real LFW images of the list, and prints one JSON line: total seconds, the
split between decoding + embedding and the metrics, and images/s. Without
``--data`` it falls back to the bundled sample's 60 validation pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import numpy as np

from kerasface.data import parse_pairs
from kerasface.data.locations import bundled_sample_dir
from kerasface.evaluation.metrics import verification_metrics
from kerasface.evaluation.verification import default_pairs_file, score_pairs
from kerasface.models import build_backbone


def main():
    ap = argparse.ArgumentParser()
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"
    ap.add_argument("--data", default=str(shared) if (shared / "lfw.zip").is_file() else str(bundled_sample_dir()))
    ap.add_argument("--pairs")
    ap.add_argument("--backbone", default="vargfacenet")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--flip", action="store_true")
    args = ap.parse_args()
    pairs_file = Path(args.pairs) if args.pairs else default_pairs_file(args.data)
    pairs = parse_pairs(pairs_file)
    model = build_backbone(args.backbone, input_shape=(args.size, args.size, 3))
    n_images = len({r for p in pairs for r in (p.path1, p.path2)})
    t0 = time.perf_counter()
    ps = score_pairs(model, args.data, pairs, flip=args.flip, batch_size=args.batch, verbose=0)
    t1 = time.perf_counter()
    m = verification_metrics(ps.labels, ps.scores, ps.folds)
    t2 = time.perf_counter()
    passes = 2 if args.flip else 1
    print(json.dumps({
        "backbone": args.backbone, "size": args.size, "pairs": len(pairs), "pairs_file": pairs_file.name,
        "unique_images": n_images, "flip": args.flip, "batch": args.batch,
        "seconds_total": round(t2 - t0, 2), "seconds_decode_and_embed": round(t1 - t0, 2),
        "seconds_metrics": round(t2 - t1, 3),
        "images_per_second": round(passes * n_images / (t1 - t0), 1),
        "auc_random_init": round(float(m["auc"]), 4), "finite_scores": bool(np.isfinite(ps.scores).all()),
    }))


if __name__ == "__main__":
    main()
