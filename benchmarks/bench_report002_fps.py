"""Inference images/s of report 002's teacher and students at the report's 218x178 input.

    python benchmarks/bench_report002_fps.py [--batch 32] [--warmup 2] [--batches 5]
        [--precision float32,mixed_bfloat16] [--models teacher,sqnxt23v5_w1,sqnxt23v5_w2]

Each model is the one whose parameter count the report gives, classifier
included: the teacher is Inception-ResNet-v1 as report 002 built it (convs with
bias, no BN, 1792-d pooled features, ``Dense(2360)``; 26,781,288 parameters),
the students SqNxt-23v5 (report layout) + ``Dense(2360)`` (1,106,456 and
3,399,352). Inputs are real LFW faces from the bundled sample, resized to
218x178 and normalised ``(x - 127.5) / 128``, tiled to the batch size.
``predict_on_batch`` (one traced predict function per model) runs ``--warmup``
batches first, then ``--batches`` timed ones; images/s = batch * batches /
seconds. Under ``mixed_bfloat16`` the models are rebuilt with that global
policy (bfloat16 compute, float32 weights and logits). Prints a Markdown table
and the load average (``os.getloadavg``) before and after, since the CPU may
be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import keras
import numpy as np

from kerasface.data import load_images
from kerasface.data.locations import bundled_sample_dir
from kerasface.models import inception_resnet_v1, sqnxt23v5
from kerasface.models.inception_resnet import REPORT_INPUT_SHAPE, REPORT_TEACHER_CLASSES

REPORT_FPS = {"teacher": 418.96, "sqnxt23v5_w2": 635.68, "sqnxt23v5_w1": 805.36}  # report 002, its own GPU


def build(name):
    if name == "teacher":
        backbone = inception_resnet_v1(input_shape=REPORT_INPUT_SHAPE, embedding_dim=None, batch_norm=False,
                                       name="report_teacher")
    elif name in ("sqnxt23v5_w1", "sqnxt23v5_w2"):
        backbone = sqnxt23v5(1.0 if name.endswith("w1") else 2.0, input_shape=REPORT_INPUT_SHAPE)
    else:
        raise SystemExit(f"unknown model {name!r}")
    logits = keras.layers.Dense(REPORT_TEACHER_CLASSES, dtype="float32", name="classifier")(backbone.output)
    return keras.Model(backbone.input, logits, name=name)


def faces(batch):
    root = bundled_sample_dir() / "lfw"
    rels = [f"{d.name}/{sorted(d.glob('*.jpg'))[0].name}" for d in sorted(root.iterdir()) if d.is_dir()][:batch]
    images, _ = load_images(root, rels, size=max(REPORT_INPUT_SHAPE[:2]), progress=False)
    x = keras.ops.image.resize(images.astype("float32"), REPORT_INPUT_SHAPE[:2])
    x = (keras.ops.convert_to_numpy(x) - 127.5) / 128.0
    reps = -(-batch // len(x))
    return np.concatenate([x] * reps)[:batch].astype("float32")


def measure(model, x, warmup, batches):
    for _ in range(warmup):
        model.predict_on_batch(x)
    t0 = time.perf_counter()
    for _ in range(batches):
        out = model.predict_on_batch(x)
    seconds = time.perf_counter() - t0
    assert np.isfinite(np.asarray(out, dtype="float32")).all()
    return len(x) * batches / seconds, 1000 * seconds / batches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--precision", default="float32,mixed_bfloat16")
    ap.add_argument("--models", default="teacher,sqnxt23v5_w1,sqnxt23v5_w2")
    args = ap.parse_args()
    x = faces(args.batch)
    load_before = os.getloadavg()
    rows = []
    for precision in args.precision.split(","):
        keras.mixed_precision.set_global_policy(precision)
        try:
            for name in args.models.split(","):
                model = build(name)
                params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
                try:
                    fps, ms = measure(model, x, args.warmup, args.batches)
                    rows.append((name, params, precision, f"{fps:.1f}", f"{ms:.0f}"))
                except Exception as exc:  # e.g. a bfloat16 kernel missing on this CPU
                    rows.append((name, params, precision, f"failed: {type(exc).__name__}", ""))
                keras.backend.clear_session()
        finally:
            keras.mixed_precision.set_global_policy("float32")
    load_after = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"input {REPORT_INPUT_SHAPE[0]}x{REPORT_INPUT_SHAPE[1]}, batch {args.batch}, "
          f"{args.warmup} warm-up + {args.batches} timed batches, keras {keras.__version__}")
    print(f"load average (1/5/15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
          f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}\n")
    print("| model | params (trainable, with Dense(2360)) | precision | images/s | ms / batch | report fps (its GPU) |")
    print("|---|---|---|---|---|---|")
    for name, params, precision, fps, ms in rows:
        print(f"| {name} | {params:,} | {precision} | {fps} | {ms} | {REPORT_FPS[name]} |")


if __name__ == "__main__":
    main()
