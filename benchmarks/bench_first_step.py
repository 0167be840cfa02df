"""The first training step of the VarGFaceNet verifier (graph tracing + first run), each variant in a fresh
process: with and without the variables built beforehand (kerasface.training.runner.build_before_tracing),
and with Keras's Adam instead of kerasface's FusedAdam.

    python benchmarks/bench_first_step.py [--backbone vargfacenet] [--rounds 2] [--batch 32]
                                          [--variants prebuilt,deferred,keras-adam,phases,no-grappler]

Variants: ``prebuilt`` (what the trainers do: variables built before ``fit``, ``FusedAdam``), ``deferred``
(variables created in the first traced step, Keras's default), ``keras-adam`` (prebuilt, with
``keras.optimizers.Adam``: about 39 graph operations per variable against FusedAdam's one kernel),
``phases`` (prebuilt, the step cut into its phases: tracing ``tf.function(model.train_step)`` in Python, its
first run, which includes grappler and every kernel's first call, and a second run; with the step's graph
operations and the process's minor page faults during the first run) and ``no-grappler`` (``phases`` with
grappler's meta optimizer off: ``tf.config.optimizer.set_experimental_options``).

Keras creates the optimizer's and metrics' variables inside the first traced step when no distribution
strategy is set, and a tf.function that creates variables is traced twice. The two variants alternate
(prebuilt, deferred, prebuilt, ...), one process each; every process builds the verifier, then times
``fit`` over 1 step (the first) and 2 more steps (steady state) on real faces from the bundled sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

VARIANTS = ("prebuilt", "deferred", "keras-adam", "phases", "no-grappler")


def sample_pairs(batch: int):
    """The bundled sample's training pairs as an endless, unshuffled ``tf.data`` batch stream."""
    from kerasface.data import PairData, parse_pairs
    from kerasface.data.locations import bundled_sample_dir

    sample = bundled_sample_dir()
    data = PairData.from_pairs(parse_pairs(sample / "pairsTrain.txt"), sample, progress=False)
    return data.dataset(batch_size=batch, shuffle=False, drop_remainder=True, repeat=True)


def sample_verifier(backbone: str):
    """The ``vargface`` preset's Siamese verifier with ``backbone``."""
    from kerasface.presets import get_pair_preset
    from kerasface.training import build_verifier

    return build_verifier(get_pair_preset("vargface").override(backbone=backbone))


def with_keras_adam(model):
    """``model`` recompiled with ``keras.optimizers.Adam`` at its rate (the peer of kerasface's FusedAdam)."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def phases(backbone: str, batch: int, grappler: bool = True) -> dict:
    """The first training step in its phases (seconds): trace, first run, second run."""
    import resource

    import tensorflow as tf

    from kerasface.training.runner import build_before_tracing

    if not grappler:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    ds = sample_pairs(batch)
    t0 = time.perf_counter()
    model = sample_verifier(backbone)
    t1 = time.perf_counter()
    build_before_tracing(model, ds)
    build, prebuild = t1 - t0, time.perf_counter() - t1
    batch_data = next(iter(ds))
    step = tf.function(model.train_step)
    t0 = time.perf_counter()
    ops = len(step.get_concrete_function(batch_data).graph.get_operations())
    trace = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    step(batch_data)
    first = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    t0 = time.perf_counter()
    step(batch_data)
    second = time.perf_counter() - t0
    return {"prebuilt": True, "grappler": grappler, "optimizer": type(model.optimizer).__name__,
            "build_s": round(build, 1), "prebuild_s": round(prebuild, 1), "trace_s": round(trace, 1), "graph_ops": ops,
            "first_run_s": round(first, 1),
            "first_run_minor_faults": faults, "second_run_s": round(second, 2),
            "first_incl_prebuild_s": round(prebuild + trace + first, 1), "steady_step_s": round(second, 2)}


def one(backbone: str, batch: int, variant: str) -> dict:
    from kerasface.training.runner import build_before_tracing

    if variant in ("phases", "no-grappler"):
        return phases(backbone, batch, grappler=variant == "phases")

    prebuild = variant != "deferred"
    ds = sample_pairs(batch)
    t0 = time.perf_counter()
    model = sample_verifier(backbone)
    if variant == "keras-adam":
        with_keras_adam(model)
    t1 = time.perf_counter()
    built = build_before_tracing(model, ds) if prebuild else False
    t2 = time.perf_counter()
    model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    t3 = time.perf_counter()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    t4 = time.perf_counter()
    return {"prebuilt": built, "optimizer": type(model.optimizer).__name__, "build_s": round(t1 - t0, 1),
            "prebuild_s": round(t2 - t1, 1),
            "first_step_s": round(t3 - t2, 1), "first_incl_prebuild_s": round(t3 - t1, 1),
            "steady_step_s": round((t4 - t3) / 2, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vargfacenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="prebuilt,deferred",
                    help=f"comma-separated, alternating each round: {', '.join(VARIANTS)}")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.backbone, args.batch, args.child)))
        return
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(set(variants) - set(VARIANTS))}; choose from {VARIANTS}")
    rows = []
    for r in range(args.rounds):
        for variant in variants:
            p = subprocess.run([sys.executable, __file__, "--backbone", args.backbone, "--batch", str(args.batch),
                                "--child", variant], capture_output=True, text=True, check=True)
            row = {"round": r + 1, "variant": variant, **json.loads(p.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| round | variables | optimizer | first step incl. building them (s) | steady step (s) |\n"
          "|---:|---|---|---:|---:|")
    for row in rows:
        what = "built before fit" if row["prebuilt"] else "created in the traced step (Keras's default)"
        if "trace_s" in row:
            what += (f" ({row['variant']}: trace {row['trace_s']} s, first run {row['first_run_s']} s, "
                     f"{row['first_run_minor_faults']:,} page faults)")
        print(f"| {row['round']} | {what} | {row['optimizer']} | {row['first_incl_prebuild_s']} "
              f"| {row['steady_step_s']} |")


if __name__ == "__main__":
    main()
