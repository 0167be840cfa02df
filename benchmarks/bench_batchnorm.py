"""Training-mode batch normalisation: Keras 3's ``keras.ops`` form against TensorFlow's fused kernel
(``kerasface.layers.FusedBatchNormalization``), per layer shape and in a whole network's training step.

    python benchmarks/bench_batchnorm.py --layers [--backbone vargfacenet] [--batch 64] [--rounds 3]
    python benchmarks/bench_batchnorm.py --network [--backbone vargfacenet] [--batch 32] [--rounds 2]

``--layers``: every distinct 4-D batch-norm shape of the backbone at its input size (with how many
layers have it), forward + gradients w.r.t. the input and gamma/beta, both forms traced first and
timed in alternation in one process, best round shown; the sum weights each shape by its count.

``--network``: the Siamese verifier of the ``vargface`` preset with that backbone (batch = pairs),
first training step (tracing included) and steady steps (the time of a fit of 1 + N steps minus that of
a fit of 1 step, over N: each ``fit`` call also has a fixed cost), one fresh process per variant,
alternating (fused, keras, fused, ...). The "keras" variant runs the same model with ``FusedBatchNormalization.call``
set to ``keras.layers.BatchNormalization.call``, i.e. Keras's own graph.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_first_step's sample helpers
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)


def _load():
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def bn_shapes(backbone: str) -> dict[tuple, int]:
    import keras

    from kerasface.models import build_backbone

    model = build_backbone(backbone)
    counts: dict[tuple, int] = {}

    def walk(layer):
        for sub in getattr(layer, "layers", []):
            if isinstance(sub, keras.layers.BatchNormalization) and len(sub.output.shape) == 4:
                shape = tuple(sub.output.shape[1:])
                counts[shape] = counts.get(shape, 0) + 1
            walk(sub)

    walk(model)
    return counts


def layers_table(backbone: str, batch: int, rounds: int, repeats: int) -> list[dict]:
    import keras
    import numpy as np
    import tensorflow as tf

    from kerasface.layers import FusedBatchNormalization

    rows = []
    for shape, count in sorted(bn_shapes(backbone).items(), key=lambda kv: -kv[0][0] * kv[0][1] * kv[0][2]):
        x = tf.Variable(np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32"))
        up = tf.constant(np.random.default_rng(1).normal(size=(batch, *shape)).astype("float32"))
        fns = {}
        for name, cls in (("keras", keras.layers.BatchNormalization), ("fused", FusedBatchNormalization)):
            layer = cls(momentum=0.99, epsilon=1e-5)
            layer.build(x.shape)

            @tf.function
            def step(layer=layer, x=x, up=up):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(layer(x, training=True) * up)
                return tape.gradient(loss, [x, *layer.trainable_weights])

            step()
            fns[name] = step
        best = {k: float("inf") for k in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                t = time.perf_counter()
                for _ in range(repeats):
                    out = fn()
                out[0].numpy()
                best[name] = min(best[name], (time.perf_counter() - t) / repeats * 1000)
        rows.append({"shape": "x".join(map(str, shape)), "count": count, "keras_ms": round(best["keras"], 2),
                     "fused_ms": round(best["fused"], 2), "ratio": round(best["keras"] / best["fused"], 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def network_child(backbone: str, batch: int, variant: str, steps: int) -> dict:
    import keras
    from bench_first_step import sample_pairs, sample_verifier

    from kerasface.layers import FusedBatchNormalization
    from kerasface.training.runner import build_before_tracing

    if variant == "keras":
        FusedBatchNormalization.call = keras.layers.BatchNormalization.call
    ds = sample_pairs(batch)
    model = sample_verifier(backbone)
    t1 = time.perf_counter()
    build_before_tracing(model, ds)
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    t2 = time.perf_counter()
    # every fit call has a fixed cost of its own (about 10 s here: a new iterator and epoch), so the steady
    # step is the difference between a fit of 1 + steps steps and one of 1 step
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    t3 = time.perf_counter()
    model.fit(ds, steps_per_epoch=1 + steps, epochs=1, verbose=0)
    t4 = time.perf_counter()
    steady = ((t4 - t3) - (t3 - t2)) / steps
    return {"variant": variant, "first_step_s": round(t2 - t1, 1), "steady_step_s": round(steady, 2),
            "pairs_per_s": round(batch / steady, 2), "fit_call_overhead_s": round((t3 - t2) - steady, 1),
            "load": _load()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--network", action="store_true")
    ap.add_argument("--backbone", default="vargfacenet")
    ap.add_argument("--batch", type=int, default=None, help="images (--layers, default 64) or pairs (--network, 32)")
    ap.add_argument("--rounds", type=int, default=None, help="default 3 (--layers) or 2 (--network)")
    ap.add_argument("--repeats", type=int, default=3, help="--layers: calls per timing")
    ap.add_argument("--steps", type=int, default=3, help="--network: steady steps per process")
    ap.add_argument("--child", choices=("fused", "keras"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="append the rows (JSON lines) to this file")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(network_child(args.backbone, args.batch, args.child, args.steps)), flush=True)
        return
    if not (args.layers or args.network):
        ap.error("give --layers and/or --network")
    print(f"load average at start: {open('/proc/loadavg').read().strip()}", flush=True)
    rows = []
    if args.layers:
        rows += [{"kind": "layer", "backbone": args.backbone, **r}
                 for r in layers_table(args.backbone, args.batch or 64, args.rounds or 3, args.repeats)]
        k = sum(r["keras_ms"] * r["count"] for r in rows)
        f = sum(r["fused_ms"] * r["count"] for r in rows)
        print(f"summed over the network's batch norms: keras {k:.0f} ms, fused {f:.0f} ms ({k / f:.2f}x)")
    if args.network:
        for r in range(args.rounds or 2):
            for variant in ("fused", "keras"):
                out = subprocess.run([sys.executable, __file__, "--child", variant, "--backbone", args.backbone,
                                      "--batch", str(args.batch or 32), "--steps", str(args.steps)],
                                     capture_output=True, text=True, check=True).stdout
                row = json.loads(out.split("RESULT ", 1)[1])
                rows.append({"kind": "network", "backbone": args.backbone, "round": r + 1, **row})
                print(json.dumps(rows[-1]), flush=True)
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")
    if args.json:
        with open(args.json, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
