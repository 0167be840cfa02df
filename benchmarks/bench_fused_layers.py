"""The VarGFaceNet verifier with each of kerasface's fused paths switched back to the plain Keras form.

    python benchmarks/bench_fused_layers.py [--variants all,slices,keras-prelu,keras-bn-infer,keras-adam] [--batch 32]
                                            [--rounds 3] [--steps 2] [--json rows.jsonl]
    python benchmarks/bench_fused_layers.py --prelu [--rounds 4]

Variants (each one is today's model with one thing put back as it was, so each ratio is what that change is
worth inside the whole network; all are built in one process, traced first, then timed in alternating
rounds, so load from other processes hits every variant alike; the figure is the median round):

* ``all``: the model as the builders make it.
* ``slices``: ``GroupConv2D``'s ``blockdiag`` / ``split`` paths cut the input with strided slices (the code
  before 2026-12-03): each slice's gradient is a zero tensor of the whole input with the slice written
  in, summed afterwards, where a split's gradient is one concatenation.
* ``keras-prelu``: ``keras.layers.PReLU`` (``relu(x) - alpha * relu(-x)``) instead of ``FusedPReLU``.
* ``keras-bn-infer``: ``FusedBatchNormalization`` in inference runs Keras's multiply-and-add, not the
  fused kernel (training is fused in both).
* ``keras-adam``: ``keras.optimizers.Adam`` (about 39 graph operations per variable) instead of
  ``kerasface.optimizers.FusedAdam`` (one fused kernel per variable). Its first step is measured fairly
  only in fresh processes: ``bench_first_step.py --variants prebuilt,keras-adam``.

Per variant: the first ``train_on_batch`` (tracing included), steady training pairs/s (``--steps`` steps a
round) and the backbone's inference images/s (``tf.function``, ``training=False``, the pair's 2 x batch
faces). ``--prelu``: one 64x56x56x80 activation, forward + gradients w.r.t. input and alpha, Keras's
``PReLU`` against ``FusedPReLU`` (ms, best round). Real faces from the bundled sample, Adam, 112x112.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

VARIANTS = ("all", "slices", "keras-prelu", "keras-bn-infer", "keras-adam")


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def _sliced_group_conv():
    """GroupConv2D as it cut its input before 2026-12-03 (strided slices; same weights and results)."""
    from keras import ops

    from kerasface.layers import GroupConv2D

    class SlicedGroupConv2D(GroupConv2D):
        def _split(self, inputs):
            cpg, m = self.in_channels // self.groups, self.filters // self.groups
            return ops.concatenate([ops.conv(inputs[..., i * cpg:(i + 1) * cpg], self.kernel[..., i * m:(i + 1) * m],
                                             strides=self.strides, padding=self.padding)
                                    for i in range(self.groups)], axis=-1)

        def _blockdiag(self, inputs, k):
            nb = self.groups // k
            if k == 1 or nb == 1:
                return super()._blockdiag(inputs, k)
            kern, w = self.block_kernels(k), k * self.in_channels // self.groups
            return ops.concatenate([ops.conv(inputs[..., i * w:(i + 1) * w], kern[:, :, i], strides=self.strides,
                                             padding=self.padding) for i in range(nb)], axis=-1)

    return SlicedGroupConv2D


def build(variant: str, batch: int):
    import keras
    from bench_first_step import sample_verifier, with_keras_adam

    from kerasface.layers import FusedBatchNormalization, FusedPReLU, GroupConv2D

    class KerasInferenceBatchNorm(FusedBatchNormalization):
        def _fused_inference(self, inputs):
            return keras.layers.BatchNormalization.call(self, inputs, training=False)

    keras.utils.set_random_seed(0)
    model = sample_verifier("vargfacenet")
    backbone = model.get_layer("vargfacenet")
    swap = {"slices": (GroupConv2D, _sliced_group_conv()), "keras-prelu": (FusedPReLU, keras.layers.PReLU),
            "keras-bn-infer": (FusedBatchNormalization, KerasInferenceBatchNorm)}.get(variant)
    n = 0
    for layer in backbone.layers:
        if swap and type(layer) is swap[0]:
            layer.__class__ = swap[1]  # same variables, read when the model is first traced
            n += 1
    if swap and not n:
        raise AssertionError(f"{variant}: no {swap[0].__name__} in the backbone")
    if variant == "keras-adam":
        with_keras_adam(model)
    return model, backbone


def network(args) -> list[dict]:
    import numpy as np
    import tensorflow as tf
    from bench_first_step import sample_pairs

    (a, b), y = next(iter(sample_pairs(args.batch)))
    both = tf.concat([a, b], 0)
    sides = {}
    for v in args.variants.split(","):
        model, backbone = build(v, args.batch)
        infer = tf.function(lambda t, bb=backbone: bb(t, training=False))
        t0 = time.perf_counter()
        model.train_on_batch([a, b], y)
        first = time.perf_counter() - t0
        infer(both)
        sides[v] = {"model": model, "infer": infer, "first": first, "train": [], "inference": []}
        print(f"{v}: first training step {first:.1f} s (load {_load()})", flush=True)
    for r in range(args.rounds):
        for s in sides.values():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s["model"].train_on_batch([a, b], y)
            s["train"].append(args.steps * args.batch / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s["infer"](both).numpy()
            s["inference"].append(args.steps * int(both.shape[0]) / (time.perf_counter() - t0))
        print(f"round {r + 1}: " + ", ".join(f"{v} {s['train'][-1]:.2f} pairs/s {s['inference'][-1]:.1f} img/s"
                                             for v, s in sides.items()) + f" (load {_load()})", flush=True)
    rows = []
    print("\n| variant | first step (s) | train pairs/s | all / this | backbone infer img/s | all / this |")
    print("|---|---:|---:|---:|---:|---:|")
    base = sides.get("all")
    for v, s in sides.items():
        tr, inf = float(np.median(s["train"])), float(np.median(s["inference"]))
        rt = f"{float(np.median(base['train'])) / tr:.2f}x" if base else "-"
        ri = f"{float(np.median(base['inference'])) / inf:.2f}x" if base else "-"
        print(f"| {v} | {s['first']:.1f} | {tr:.2f} ({', '.join(f'{x:.2f}' for x in s['train'])}) | {rt} "
              f"| {inf:.1f} ({', '.join(f'{x:.1f}' for x in s['inference'])}) | {ri} |")
        rows.append({"bench": "fused_layers", "variant": v, "batch_pairs": args.batch, "first_step_s": s["first"],
                     "train_pairs_per_s": s["train"], "infer_img_per_s": s["inference"], "load_end": _load()})
    return rows


def prelu(args) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from kerasface.layers import FusedPReLU

    x = tf.constant(np.random.default_rng(0).normal(size=(64, 56, 56, 80)).astype("float32"))
    steps = {}
    for name, cls in (("keras PReLU", keras.layers.PReLU), ("FusedPReLU", FusedPReLU)):
        layer = cls(shared_axes=[1, 2], alpha_initializer=keras.initializers.Constant(0.25))
        layer.build(x.shape)

        @tf.function
        def step(t, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(t)
                loss = tf.reduce_sum(layer(t) * 0.5)
            return tape.gradient(loss, [t, layer.alpha])

        step(x)
        steps[name] = step
    best = {}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(3):
                [g.numpy() for g in step(x)]
            best[name] = min(best.get(name, 1e9), (time.perf_counter() - t0) / 3 * 1000)
    print(f"64x56x56x80, forward + gradients, best of {args.rounds} rounds (load {_load()}): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in best.items())
          + f"; ratio {best['keras PReLU'] / best['FusedPReLU']:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=32, help="pairs per training step")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2, help="training steps and inference calls per round")
    ap.add_argument("--prelu", action="store_true", help="time one PReLU activation instead of the network")
    ap.add_argument("--json", help="append the rows to this .jsonl file")
    args = ap.parse_args()
    bad = set(args.variants.split(",")) - set(VARIANTS)
    if bad:
        ap.error(f"unknown variants {sorted(bad)}; choose from {VARIANTS}")
    if args.prelu:
        prelu(args)
        return
    print(f"VarGFaceNet verifier, batch {args.batch} pairs, {args.rounds} rounds of {args.steps} steps; "
          f"load {_load()} at the start")
    rows = network(args)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
