"""Peak memory and images/s of chunked loading as the listed data set grows.

    python3 benchmarks/bench_chunked.py [--sizes 10000,100000,1000000] [--chunk-size 1000]
                                        [--chunks 3] [--image-sizes 112,224] [--json out.json]

Synthetic file lists (``path,label`` CSV, 100 images per identity) whose paths
point at the 410 real LFW JPEGs of ``data/lfw_sample`` over and over, so every
decode is a real JPEG decode + resize.  Every (list size, image size) runs in a
fresh subprocess, so each peak is its own.  Two ways of holding the list:

* ``csv``: build the :class:`IdentityIndex` from the CSV in the process
  (reported: build time, index bytes, peak RSS of the build), then iterate;
* ``mmap``: load an index saved beforehand with ``IdentityIndex.save``,
  memory-mapped, then iterate.

Each then iterates ``--chunks`` chunks of ``--chunk-size`` images (cover mode,
M = 40 images per identity, prefetch 1, default decoding threads).  The peak
RSS of the iteration is measured from a reset high-water mark
(``/proc/self/clear_refs``), so it is not hidden by the build's peak; the
private part (``RssAnon``: excludes shared libraries and the pages of a
memory-mapped index, which the kernel may drop at any time) is sampled every
2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "lfw_sample" / "lfw"
PER_IDENTITY = 100


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


class _AnonSampler:
    """Max of RssAnon (private memory; excludes mapped files and shared libraries) sampled every 2 ms."""

    def __init__(self):
        import threading

        self.peak_kb = _status_kb("RssAnon")
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))
        return self.peak_kb / 1024


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def write_list(path: Path, n: int) -> None:
    jpegs = sorted(str(p) for p in SAMPLE.glob("*/*.jpg"))
    with open(path, "w") as f:
        f.write("path,label\n")
        for i in range(n):
            f.write(f"{jpegs[i % len(jpegs)]},id{i // PER_IDENTITY:07d}\n")


def child(args) -> dict:
    from kerasface.data.identities import IdentityIndex
    from kerasface.data.loaders import ChunkedLoader

    out = {"size": args.n, "image_size": args.image_size, "index": args.mode}
    out["rss_after_import_mb"] = _status_kb("VmRSS") / 1024
    out["anon_after_import_mb"] = _status_kb("RssAnon") / 1024
    _reset_peak()
    t0 = time.perf_counter()
    if args.mode == "csv":
        index = IdentityIndex.from_csv(args.list)
    else:
        index = IdentityIndex.load(args.list, mmap=True)
    out["index_s"] = time.perf_counter() - t0
    out["index_mb"] = index.nbytes / 2**20
    out["peak_build_mb"] = _status_kb("VmHWM") / 1024
    out["reset_ok"] = _reset_peak()
    sampler = _AnonSampler()
    loader = ChunkedLoader(index, chunk_size=args.chunk_size, images_per_identity=40, image_size=args.image_size,
                           prefetch=1)
    t0 = time.perf_counter()
    n_chunks = loader.num_chunks(0)
    out["plan_s"] = time.perf_counter() - t0
    out["chunks_per_epoch"] = n_chunks
    images = 0
    t0 = time.perf_counter()
    for k, chunk in enumerate(loader.epoch(0)):
        images += len(chunk)
        if k + 1 == args.chunks:
            break
    wall = time.perf_counter() - t0
    loader.close()
    out["images"] = images
    out["images_per_s"] = images / wall
    out["chunk_mb"] = args.chunk_size * args.image_size ** 2 * 3 / 2**20
    out["peak_iterate_mb"] = _status_kb("VmHWM") / 1024
    out["anon_peak_iterate_mb"] = sampler.stop()
    out["file_rss_end_mb"] = _status_kb("RssFile") / 1024
    out["peak_process_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["skipped"] = loader.stats["skipped"]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--image-sizes", default="112,224")
    ap.add_argument("--chunk-size", type=int, default=1000)
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="csv", help=argparse.SUPPRESS)
    ap.add_argument("--list", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--image-size", type=int, default=112, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    image_sizes = [int(s) for s in args.image_sizes.split(",")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_chunked_") as tmp:
        tmp = Path(tmp)
        for n in sizes:
            lst = tmp / f"list_{n}.csv"
            write_list(lst, n)
            saved = tmp / f"index_{n}"
            prep = (f"from kerasface.data.identities import IdentityIndex as I; "
                    f"I.from_csv({str(lst)!r}).save({str(saved)!r})")
            subprocess.run([sys.executable, "-c", prep], check=True, env=env, capture_output=True)
            for s in image_sizes:
                for mode, src in (("csv", lst), ("mmap", saved)):
                    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--list", str(src), "--n", str(n),
                           "--image-size", str(s), "--chunk-size", str(args.chunk_size), "--chunks", str(args.chunks)]
                    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if p.returncode != 0:
                        sys.exit(f"child failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
                    r = json.loads(p.stdout.strip().splitlines()[-1])
                    rows.append(r)
                    print(f"{n:>9,} images  {s}px  {mode:<4}  index {r['index_s']:6.2f} s {r['index_mb']:6.1f} MB  "
                          f"build peak {r['peak_build_mb']:5.0f} MB  iterate peak {r['peak_iterate_mb']:5.0f} MB "
                          f"(private {r['anon_peak_iterate_mb']:4.0f} MB)  "
                          f"after import {r['rss_after_import_mb']:.0f} MB "
                          f"(private {r['anon_after_import_mb']:.0f} MB)  {r['images_per_s']:5.0f} images/s",
                          flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
