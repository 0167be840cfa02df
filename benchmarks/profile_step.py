"""Where a VarGFaceNet verifier's training step (or its backbone's inference) spends its time, per op type.

    python benchmarks/profile_step.py [--mode train|infer] [--batch 32] [--steps 3] [--out /tmp/kerasface-profile]

Builds the ``vargface`` preset's verifier on real faces from the bundled sample, runs the step until it is warm,
then records ``--steps`` calls with TensorFlow's profiler and sums the kernels' time by op type: the grouped
convolutions' blocks (``GroupConv2D`` with its batch norm: VarGFaceNet's ``*_gconv`` and ``*_gconv_bn`` scopes,
including the copies the ``split`` path adds: ``Split``, ``SplitV``, ``ConcatV2``, ``Slice``) apart from the rest.
Times are kernel time summed over TensorFlow's threads (more than the wall time when ops run side by side), per
call. Needs the profiler's reader: ``pip install tensorboard-plugin-profile`` (a benchmark extra).
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)


# Events that wrap others (the executor's and XLA's bookkeeping), not kernels of their own
WRAPPERS = {"Process", "Start", "Run", "Done", "ExecuteAsyncOnStream", "BlockUntilReady", "ParallelFor", "Await",
            "ExecutorDoneCallback", "FunctionRun", "one_step_on_data", "train_step"}  # the last: Keras's traced step


def op_times(trace_dir: str) -> collections.Counter:
    """``{(grouped, op type): ns}`` over every kernel event of the newest profile in ``trace_dir``; ``grouped``: the
    op sits in the scope of a grouped convolution's layers (VarGFaceNet's ``*_gconv`` and its ``*_gconv_bn``)."""
    from xprof.profile_data import ProfileData

    path = max(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True), key=os.path.getmtime)
    totals = collections.Counter()
    for plane in ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                scope, _, op_type = event.name.rpartition(":")  # "scope/name:Type"; XLA's fusions have no scope
                op_type = op_type.strip()
                if (op_type in WRAPPERS or op_type.startswith(("__inference", "TFE_", "Eager"))
                        or not op_type.lstrip("_")[:1].isalpha()):  # Python scopes such as <lambda>
                    continue
                totals[("gconv" in scope, op_type)] += event.duration_ns
    return totals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("train", "infer"), default="train")
    ap.add_argument("--batch", type=int, default=32, help="pairs (train) or half the images (infer)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="/tmp/kerasface-profile")
    args = ap.parse_args()

    import tensorflow as tf
    from bench_first_step import sample_pairs, sample_verifier

    from kerasface.training.runner import build_before_tracing

    ds = sample_pairs(args.batch)
    (a, b), y = next(iter(ds))
    model = sample_verifier("vargfacenet")
    if args.mode == "train":
        build_before_tracing(model, ds)

        def step():
            model.train_on_batch([a, b], y)
    else:
        backbone = model.get_layer("vargfacenet")
        both = tf.concat([a, b], 0)
        infer = tf.function(lambda t: backbone(t, training=False))

        def step():
            infer(both).numpy()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    step()
    wall = time.perf_counter() - t0
    out = os.path.join(args.out, args.mode)
    tf.profiler.experimental.start(out)
    for _ in range(args.steps):
        step()
    tf.profiler.experimental.stop()
    totals = op_times(out)
    total = sum(totals.values())
    print(f"{args.mode}, batch {args.batch} {'pairs' if args.mode == 'train' else 'x 2 images'}: "
          f"{wall:.2f} s a step (wall, unprofiled); kernel time {total / 1e9 / args.steps:.2f} s a step\n")
    print("| scope | op | ms a step | share |\n|---|---|---:|---:|")
    for (grouped, op_type), ns in totals.most_common(20):
        print(f"| {'grouped conv block' if grouped else 'other'} | {op_type} | {ns / 1e6 / args.steps:.1f} | "
              f"{100 * ns / total:.1f} % |")


if __name__ == "__main__":
    main()
