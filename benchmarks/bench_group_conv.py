"""Training-step time of one grouped convolution, per implementation path.

    python benchmarks/bench_group_conv.py [--batch 32] [--repeats 3] [--rounds 3] [--torch]

Each row: forward + backward (gradients w.r.t. input and kernel) of
``GroupConv2D`` with the given path, against ``keras.layers.Conv2D(groups=G)``,
on random activations (the cost does not depend on image content). The shapes
are VarGFaceNet's (8 input channels per group), every distinct grouped conv of the
network. All paths of a row are traced first, then timed in ``--rounds`` rounds that
alternate them (``--repeats`` steps each); a figure is the best round, so load from
other processes hits all paths alike. ``blockdiag`` runs with the block size
``group_conv_block_groups`` picks (shown as ``k``). Results go to stdout as a
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
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import keras
import numpy as np
import tensorflow as tf

from kerasface.layers import GroupConv2D, resolve_group_conv_implementation

# (name, input H=W, in, out, groups, stride, count in VarGFaceNet): its grouped convs; the name gives
# the output map. Count = how many such convs the full network has (stage 3 with 6 normal blocks).
CASES = [
    ("head 56x56 40->40 g5 s2", 112, 40, 40, 5, 2, 2),
    ("head 56x56 40->40 g5", 56, 40, 40, 5, 1, 1),
    ("stage2 down 28x28 40->80 g5 s2", 56, 40, 80, 5, 2, 3),
    ("stage2 28x28 80->160 g10", 28, 80, 160, 10, 1, 5),
    ("stage3 down 14x14 80->160 g10 s2", 28, 80, 160, 10, 2, 3),
    ("stage3 14x14 160->320 g20", 14, 160, 320, 20, 1, 13),
    ("stage4 down 7x7 160->320 g20 s2", 14, 160, 320, 20, 2, 3),
    ("stage4 7x7 320->640 g40", 7, 320, 640, 40, 1, 7),
    ("embed 7x7 1024->1024 g128 (valid)", 7, 1024, 1024, 128, 1, 1),
]
PATHS = ("native", "split", "depthwise", "blockdiag", "matmul")


def make_step(layer, forward=False):
    if forward:  # inference: the layer alone, no tape
        return tf.function(lambda x: layer(x, training=False))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [x, *layer.trainable_weights])

    return step


def timed(step, x, repeats):
    t0 = time.perf_counter()
    for _ in range(repeats):
        step(x)
    return (time.perf_counter() - t0) / repeats * 1000


def torch_step(hw, cin, cout, g, s, k, pad, batch, forward=False):
    import torch

    torch.set_num_threads(os.cpu_count())
    conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=k // 2 if pad == "same" else 0, groups=g, bias=False)
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(batch, cin, hw, hw).contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step(_):
        y = conv(x)
        (y * y).sum().backward()

    def infer(_):
        with torch.inference_mode():
            conv(x)

    return infer if forward else step


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--native", action="store_true",
                    help="also time Conv2D(groups) and the native path (1-2 s a step on TF's CPU)")
    ap.add_argument("--torch", action="store_true", help="add a PyTorch nn.Conv2d(groups) column")
    ap.add_argument("--only", help="comma-separated substrings of the row names to run")
    ap.add_argument("--forward", action="store_true",
                    help="time inference (the forward alone, training=False) instead of a training step")
    ap.add_argument("--blocks", action="store_true",
                    help="add a blockdiag column for every block size k (a divisor of G)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    what = "inference call (forward only)" if args.forward else "training step (forward + backward)"
    print(f"batch {args.batch}, ms per {what}, best of {args.rounds} "
          f"interleaved rounds of {args.repeats}; load {open('/proc/loadavg').read().split()[0]}\n")
    paths = PATHS if args.native or args.forward else PATHS[1:]  # native's forward is not the slow part
    head = ("| conv | count | " + ("Conv2D(groups) | " if args.native else "") + " | ".join(paths)
            + " | auto picks | auto / best |" + (" PyTorch Conv2d(groups) | auto / PyTorch |" if args.torch else ""))
    print(head)
    print("|---|---:|" + "---:|" * (len(paths) + (1 if args.native else 0)) + "---|---:|"
          + ("---:|---:|" if args.torch else ""))
    for name, hw, cin, cout, g, s, count in CASES:
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        x = tf.constant(rng.normal(size=(args.batch, hw, hw, cin)).astype("float32"))
        k = 7 if "valid" in name else 3
        pad = "valid" if "valid" in name else "same"
        ref = keras.layers.Conv2D(cout, k, strides=s, padding=pad, groups=g, use_bias=False)
        ref.build(x.shape)
        want = ref(x).numpy()
        steps = {}
        if args.native:
            steps["Conv2D(groups)"] = make_step(ref, args.forward)
        for impl in paths + ("auto",):
            layer = GroupConv2D(cout, k, strides=s, padding=pad, groups=g, implementation=impl)
            layer.build(x.shape)
            layer.kernel.assign(ref.kernel)
            np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-3, atol=1e-3)
            steps[impl] = make_step(layer, args.forward)
        blocks = [b for b in range(1, g + 1) if g % b == 0] if args.blocks else []
        for b in blocks:
            layer = GroupConv2D(cout, k, strides=s, padding=pad, groups=g, implementation="blockdiag",
                                block_groups=b)
            layer.build(x.shape)
            layer.kernel.assign(ref.kernel)
            steps[f"k={b}"] = make_step(layer, args.forward)
        if args.torch:
            steps["torch"] = torch_step(hw, cin, cout, g, s, k, pad, args.batch, args.forward)
        best = {}
        for st in steps.values():
            st(x)  # trace
        for _ in range(args.rounds):
            for key, st in steps.items():
                slow = key in ("native", "Conv2D(groups)") and not args.forward
                t = timed(st, x, 1 if slow else args.repeats)
                best[key] = min(best.get(key, t), t)
        auto = resolve_group_conv_implementation("auto", g, input_shape=x.shape, kernel_size=k, padding=pad)
        if auto == "blockdiag":
            probe = GroupConv2D(cout, k, strides=s, padding=pad, groups=g)
            probe.build(x.shape)
            auto += f" k={probe.block_size(x.shape)}"
        fastest = min(best[p] for p in paths)
        cells = [f"{best[p]:.1f}" for p in (["Conv2D(groups)"] if args.native else []) + list(paths)]
        line = (f"| {name} | {count} | " + " | ".join(cells) + f" | {auto} | {best['auto'] / fastest:.2f} |")
        if args.torch:
            line += f" {best['torch']:.1f} | {best['auto'] / best['torch']:.2f}x |"
        print(line, flush=True)
        if blocks:
            print("|  | blockdiag per k: " + ", ".join(f"{b}: {best[f'k={b}']:.1f}" for b in blocks) + " |", flush=True)
    print(f"\nload at end {open('/proc/loadavg').read().split()[0]}")


if __name__ == "__main__":
    main()
