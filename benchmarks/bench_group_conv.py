"""Training-step time of one grouped 3x3 convolution, per implementation path.

    python benchmarks/bench_group_conv.py [--batch 32] [--repeats 10]

Each row: forward + backward (gradients w.r.t. input and kernel) of
``GroupConv2D`` with the given path, against ``keras.layers.Conv2D(groups=G)``,
on random activations (the cost does not depend on image content). The shapes
are VarGFaceNet's (8 input channels per group). Results go to stdout as a
Markdown table; copy them into docs/performance.md with the date and machine.

``--torch`` adds the same convolution written directly in PyTorch (``nn.Conv2d(groups=G)``,
channels-last, forward + backward of the same loss), when PyTorch is installed: the
"half the PyTorch figure" target for grouped backbones is read from the last two columns.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from kerasface.layers import GroupConv2D, resolve_group_conv_implementation

# (name, H=W, in, out, groups, stride): the grouped convs of VarGFaceNet.
CASES = [
    ("head 56x56 40->40 g5 s2", 112, 40, 40, 5, 2),
    ("stage2 28x28 80->160 g10", 28, 80, 160, 10, 1),
    ("stage3 14x14 160->320 g20", 14, 160, 320, 20, 1),
    ("stage4 7x7 320->640 g40", 7, 320, 640, 40, 1),
    ("embed 7x7 1024->1024 g128 (valid)", 7, 1024, 1024, 128, 1),
]


def step_time(layer, x, repeats):
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    step(x)  # trace
    t0 = time.perf_counter()
    for _ in range(repeats):
        step(x)
    return (time.perf_counter() - t0) / repeats * 1000


def torch_step_time(hw, cin, cout, g, s, k, pad, batch, repeats):
    import torch

    torch.set_num_threads(os.cpu_count())
    conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=k // 2 if pad == "same" else 0, groups=g, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, hw, hw).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step():
        y = conv(x)
        (y * y).sum().backward()

    step()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t0) / repeats * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--native-repeats", type=int, default=2, help="the slow path is timed fewer times")
    ap.add_argument("--torch", action="store_true", help="add a PyTorch nn.Conv2d(groups) column")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, ms per training step (forward + backward)\n")
    extra = " PyTorch Conv2d(groups) | best kerasface / PyTorch |" if args.torch else ""
    print("| conv | Conv2D(groups) | native | split | depthwise | auto picks |" + extra)
    print("|---|---:|---:|---:|---:|---|" + ("---:|---:|" if args.torch else ""))
    for name, hw, cin, cout, g, s in CASES:
        x = tf.constant(rng.normal(size=(args.batch, hw, hw, cin)).astype("float32"))
        k = 7 if "valid" in name else 3
        pad = "valid" if "valid" in name else "same"
        ref = keras.layers.Conv2D(cout, k, strides=s, padding=pad, groups=g, use_bias=False)
        ref.build(x.shape)
        row = [f"{step_time(ref, x, args.native_repeats):.1f}"]
        for impl in ("native", "split", "depthwise"):
            layer = GroupConv2D(cout, k, strides=s, padding=pad, groups=g, implementation=impl)
            layer.build(x.shape)
            layer.kernel.assign(ref.kernel)
            np.testing.assert_allclose(layer(x).numpy(), ref(x).numpy(), rtol=1e-3, atol=1e-3)
            reps = args.native_repeats if impl == "native" else args.repeats
            row.append(f"{step_time(layer, x, reps):.1f}")
        line = f"| {name} | " + " | ".join(row) + f" | {resolve_group_conv_implementation('auto', g)} |"
        if args.torch:
            t = torch_step_time(hw, cin, cout, g, s, k, pad, args.batch, args.repeats)
            best = min(float(row[2]), float(row[3]))
            line += f" {t:.1f} | {best / t:.2f}x |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
