"""Training and inference images/s of every registered backbone, with FLOPs/image, GFLOP/s and % of peak.

    python benchmarks/bench_backbones.py [--backbones resnet18,vargfacenet] [--batch 16] [--steps 3]
        [--precision float32,bfloat16] [--jit off,on] [--no-train] [--json out.json]

Each backbone is built at its own default input size (``kerasface summary NAME``) and fed real LFW faces
from the bundled sample, resized to that size. Training = one optimizer step (Adam) of the backbone plus a
float32 softmax classifier over 100 identities (sparse cross-entropy) on a batch of ``--batch`` images;
inference = the backbone alone (``training=False``) in a ``tf.function``. The first call of each (graph
tracing, XLA compilation: up to ~150 s for full-size VarGFaceNet here) and ``--warmup`` more are not timed;
the mean of ``--steps`` timed steps is reported.

FLOPs/image = 2 x the MACs of :func:`kerasface.models.profile_model` (convolutions and dense layers; the
forward pass); a training step is counted as 3x the forward FLOPs (forward + two backward products).
Achieved GFLOP/s = FLOPs/image x images/s; "% peak" is against this CPU's float32 peak,
``cpu_peak.theoretical_peak()``: cores x FLOP/cycle of its family x 3.75 GHz (on the 2-core AMD Zen 5 of
2026-11-26: 2 x 64 x 3.75 = 480 GFLOP/s, which a 4096^2 TensorFlow matmul reaches; ``--peak`` to change,
``benchmarks/cpu_peak.py`` to measure).
The load average is printed with the table; the benchmark itself keeps every core busy, so a load above the
core count means the CPU was shared and the numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import keras
import numpy as np
import tensorflow as tf
from cpu_peak import load_summary, theoretical_peak

from kerasface.data import load_images, open_image_source
from kerasface.data.locations import bundled_sample_dir
from kerasface.models import build_backbone, list_backbones, profile_model
from kerasface.training.distribute import Runtime

PEAK_GFLOPS = theoretical_peak()


def faces(h: int, w: int, n: int) -> np.ndarray:
    """``n`` real faces, centre square resized to the longer side, then cropped to ``h`` x ``w``."""
    source = open_image_source(bundled_sample_dir())
    names = sorted(source.list_images())[:n]
    side = max(h, w)
    images, _ = load_images(source, names, size=side, progress=False)
    y0, x0 = (side - h) // 2, (side - w) // 2
    return (images[:, y0:y0 + h, x0:x0 + w].astype(np.float32) - 127.5) / 128.0


def bench_one(name: str, precision: str, jit: bool, batch: int, steps: int, warmup: int, train: bool,
              input_shape: tuple | None = None) -> dict:
    """One row of the table; ``input_shape`` overrides the backbone's default input size."""
    rt = Runtime(mixed_precision=precision, jit_compile=jit)
    with rt.precision() as policy:
        backbone = build_backbone(name, **({"input_shape": input_shape} if input_shape else {}))
        h, w = backbone.input_shape[1:3]
        size = h if h == w else f"{h}x{w}"
        x = tf.constant(faces(h, w, batch))
        y = tf.constant(np.arange(batch) % 100, tf.int32)
        macs = profile_model(backbone).macs
        row = {"backbone": name, "input": size, "batch": batch, "policy": policy, "xla": jit,
               "params_m": round(backbone.count_params() / 1e6, 2), "gflops_per_image": round(2 * macs / 1e9, 3)}
        infer = tf.function(lambda t: backbone(t, training=False), jit_compile=jit)
        t0 = time.perf_counter()
        infer(x).numpy()
        row["infer_first_s"] = round(time.perf_counter() - t0, 1)
        for _ in range(warmup):
            infer(x).numpy()
        t0 = time.perf_counter()
        for _ in range(steps):
            infer(x).numpy()
        dt = (time.perf_counter() - t0) / steps
        row["infer_img_s"] = round(batch / dt, 1)
        row["infer_gflop_s"] = round(batch / dt * 2 * macs / 1e9, 1)
        if train:
            inp = keras.Input(backbone.input_shape[1:])
            logits = keras.layers.Dense(100, dtype="float32", name="logits")(backbone(inp))
            model = keras.Model(inp, logits)
            model.compile(optimizer=keras.optimizers.Adam(1e-4),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **rt.compile_kwargs())
            t0 = time.perf_counter()
            model.train_on_batch(x, y)
            row["train_first_s"] = round(time.perf_counter() - t0, 1)
            for _ in range(warmup):
                model.train_on_batch(x, y)
            t0 = time.perf_counter()
            for _ in range(steps):
                loss = model.train_on_batch(x, y)
            dt = (time.perf_counter() - t0) / steps
            row["train_img_s"] = round(batch / dt, 1)
            row["train_gflop_s"] = round(batch / dt * 3 * 2 * macs / 1e9, 1)
            row["loss_finite"] = bool(np.isfinite(float(np.asarray(loss).ravel()[0])))
    return row


def interleaved(name: str, rounds: int, batch: int, labels=("float32", "mixed_bfloat16", "float32+xla")) -> dict:
    """float32 vs mixed_bfloat16 vs float32 + XLA on one backbone, timed in alternation.

    All models are built and traced first; then each round runs one training step and one inference
    batch of every configuration in turn, so a change of the machine's load hits them alike (medians).
    """
    configs = {"float32": Runtime(), "mixed_bfloat16": Runtime(mixed_precision="bfloat16"),
               "float32+xla": Runtime(jit_compile=True), "mixed_bfloat16+xla": Runtime("default", "bfloat16", True)}
    models = {}
    for label in labels:
        rt = configs[label]
        with rt.precision():
            bb = build_backbone(name)
            h, w = bb.input_shape[1:3]
            x = tf.constant(faces(h, w, batch))
            y = tf.constant(np.arange(batch) % 100, tf.int32)
            inp = keras.Input(bb.input_shape[1:])
            m = keras.Model(inp, keras.layers.Dense(100, dtype="float32")(bb(inp)))
            m.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      **rt.compile_kwargs())
            inf = tf.function(lambda t, bb=bb: bb(t, training=False), jit_compile=rt.jit_compile)
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            first = time.perf_counter() - t0
            inf(x).numpy()
            m.train_on_batch(x, y)
            inf(x).numpy()
            models[label] = (m, inf, first)
    tr = {k: [] for k in models}
    inf_t = {k: [] for k in models}
    for _ in range(rounds):
        for k, (m, inf, _) in models.items():
            t0 = time.perf_counter()
            m.train_on_batch(x, y)
            tr[k].append(batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            inf(x).numpy()
            inf_t[k].append(batch / (time.perf_counter() - t0))
    out = {k: {"train_img_s_median": round(float(np.median(tr[k])), 2),
               "infer_img_s_median": round(float(np.median(inf_t[k])), 2), "first_train_s": round(models[k][2], 1)}
           for k in models}
    out.update(load=os.getloadavg(), backbone=name, rounds=rounds)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default=",".join(list_backbones()))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--precision", default="off", help="comma list of off, bfloat16, float16")
    ap.add_argument("--jit", default="off", help="comma list of off, on")
    ap.add_argument("--no-train", action="store_true", help="inference only")
    ap.add_argument("--peak", type=float, default=PEAK_GFLOPS, help="float32 peak GFLOP/s of this CPU")
    ap.add_argument("--json", help="also append the rows (JSON lines) to this file")
    ap.add_argument("--interleave", action="store_true",
                    help="compare float32, mixed_bfloat16 and float32 + XLA on each backbone, timed in alternation "
                         "(--steps rounds), instead of the table")
    args = ap.parse_args()
    if args.interleave:
        for name in args.backbones.split(","):
            print(json.dumps(interleaved(name, args.steps, args.batch)), flush=True)
        return
    header = (f"{'backbone':<20} {'input':>5} {'policy':<15} {'xla':<4} {'GFLOP/img':>9} "
              f"{'train img/s':>11} {'GFLOP/s':>8} {'%peak':>6} {'infer img/s':>11} {'GFLOP/s':>8} {'%peak':>6} "
              f"{'1st train s':>11}")
    print(header, flush=True)
    for name in args.backbones.split(","):
        for precision in args.precision.split(","):
            for jit in args.jit.split(","):
                try:
                    r = bench_one(name, precision, jit == "on", args.batch, args.steps, args.warmup,
                                  not args.no_train)
                except Exception as e:  # one failing configuration must not stop the table
                    print(f"{name:<20} {precision} xla={jit}: failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                r["load_1min"] = round(os.getloadavg()[0], 2)
                tr = r.get("train_img_s")
                print(f"{name:<20} {r['input']:>5} {r['policy']:<15} {jit:<4} {r['gflops_per_image']:>9.3f} "
                      f"{tr if tr is not None else '-':>11} {r.get('train_gflop_s', '-'):>8} "
                      f"{(100 * r['train_gflop_s'] / args.peak if tr else 0):>5.1f}% "
                      f"{r['infer_img_s']:>11} {r['infer_gflop_s']:>8} {100 * r['infer_gflop_s'] / args.peak:>5.1f}% "
                      f"{r.get('train_first_s', '-'):>11}", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
    print(load_summary())


if __name__ == "__main__":
    main()
