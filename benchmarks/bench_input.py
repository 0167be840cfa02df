"""Input pipeline images/s: decode + augment + batch, from folder JPEGs and from TFRecord shards.

    python benchmarks/bench_input.py [--sizes 112,224] [--batch 64] [--batches 40] [--json out.json]

Source: the bundled real LFW sample (data/lfw_sample, 410 JPEGs of 250x250), repeated (no cache, so
every image is decoded every time). Two pipelines per size, both ending in augment -> normalise ->
batch -> prefetch, with report 001's policy (random resized crop 0.8-1.0 + colour jitter, batched):

* ``folder``: list of JPEG paths -> shuffle -> parallel read_file + decode_jpeg + centre crop/resize;
* ``tfrecord``: ``kerasface pack`` shards (crops re-encoded as JPEG q95 at the size; 8 shards in a
  temporary folder) -> ``read_shards`` (interleave, parallel decode, shuffle buffer 1024).

The first 5 batches (warm-up, autotuning) are not timed. The machine's load average is printed with
the results: the benchmark keeps every core busy, so a load above the core count means the CPU was
shared and the numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

import tensorflow as tf
from cpu_peak import load_summary

from kerasface.data.augment import augment_dataset, make_augment
from kerasface.data.identities import IdentityIndex
from kerasface.data.locations import bundled_sample_dir
from kerasface.data.tfrecord import pack, read_shards

AUTOTUNE = tf.data.AUTOTUNE


def _finish(ds, batch: int, seed: int):
    ds = ds.repeat().batch(batch, drop_remainder=True, num_parallel_calls=AUTOTUNE)
    ds = augment_dataset(ds, make_augment("report001-both"), seed=seed)
    ds = ds.map(lambda x, y: ((x - 127.5) / 128.0, y), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def folder_pipeline(index: IdentityIndex, size: int, batch: int, seed: int = 0):
    paths = [os.path.join(index.root, p) for p in index.paths(range(len(index)))]
    ds = tf.data.Dataset.from_tensor_slices((paths, index.labels.astype("int32")))
    ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(p, y):
        img = tf.io.decode_jpeg(tf.io.read_file(p), channels=3, dct_method="INTEGER_ACCURATE")
        s = tf.minimum(tf.shape(img)[0], tf.shape(img)[1])
        img = tf.image.resize_with_crop_or_pad(img, s, s)
        img = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(img, [size, size], method="area")), 0, 255), tf.uint8)
        return img, y

    return _finish(ds.map(load, num_parallel_calls=AUTOTUNE), batch, seed)


def tfrecord_pipeline(out: str, size: int, batch: int, seed: int = 0):
    ds = read_shards(out, image_size=size, shuffle_buffer=1024, seed=None)
    return _finish(ds, batch, seed)


def measure(ds, batches: int, batch: int, warmup: int = 5) -> float:
    it = iter(ds)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    _ = x.numpy()
    return batches * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="112,224")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    index = IdentityIndex.open(bundled_sample_dir() / "lfw")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            out = os.path.join(tmp, f"pack{size}")
            pack(index, out, shards=8, image_size=size, fmt="jpg", progress=False)
            for kind, ds in (("folder", folder_pipeline(index, size, args.batch)),
                             ("tfrecord", tfrecord_pipeline(out, size, args.batch))):
                rate = measure(ds, args.batches, args.batch)
                rows.append({"source": kind, "size": size, "batch": args.batch, "images_per_s": round(rate, 1)})
                print(f"{kind:<9} {size:>4}px  batch {args.batch}: {rate:8.1f} images/s", flush=True)
    load = os.getloadavg()
    print(load_summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loadavg": load, "cpus": os.cpu_count()}, f, indent=2)


if __name__ == "__main__":
    main()
