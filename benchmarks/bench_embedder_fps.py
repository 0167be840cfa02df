"""Inference images/s of embedding models on this CPU: pretrained names, ``.keras`` files or run folders.

    python benchmarks/bench_embedder_fps.py dlib-resnet-v1 runs/distill-sqnxt23v5-1.0 ... \
        [--batch 32] [--warmup 2] [--batches 5]

Each model gets real faces from the bundled LFW sample at its own input size (uint8 values
for a model that scales its own input, else ``(x - 127.5) / 128``), tiled to the batch size;
``predict_on_batch`` runs ``--warmup`` batches, then ``--batches`` timed ones; images/s =
batch * batches / seconds. Prints a Markdown table (parameters counted with the model's own
``count_params``) and the load average before and after, since the CPU may be shared.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import numpy as np

from kerasface.data import load_images
from kerasface.data.locations import bundled_sample_dir
from kerasface.ops import normalize_faces
from kerasface.pretrained import resolve
from kerasface.recognition.spec import spec_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batches", type=int, default=5)
    args = p.parse_args()
    root = bundled_sample_dir() / "lfw"
    rels = sorted(str(f.relative_to(root)) for f in root.rglob("*.jpg"))[:args.batch]
    print(f"load average before: {os.getloadavg()}")
    print("| model | input | parameters | images/s |\n|---|---|---:|---:|")
    for name in args.models:
        model = resolve(name)
        spec = spec_of(model, name if os.path.isdir(name) else None)
        side = spec.image_size[0]
        faces = load_images(str(root), rels, side, progress=False)[0]
        faces = np.resize(faces, (args.batch,) + faces.shape[1:])
        x = faces.astype(np.float32) if spec.input_scaling == "in-model" else np.asarray(normalize_faces(faces))
        for _ in range(args.warmup):
            model.predict_on_batch(x)
        t0 = time.perf_counter()
        for _ in range(args.batches):
            model.predict_on_batch(x)
        rate = args.batch * args.batches / (time.perf_counter() - t0)
        print(f"| {name} | {side}x{side} | {model.count_params():,} | {rate:.1f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
