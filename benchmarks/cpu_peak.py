"""This CPU's float32 peak, computed from its model and measured with a large matrix product.

    python benchmarks/cpu_peak.py [--n 4096] [--repeats 7]

"Theoretical": cores x FLOP/cycle x clock. FLOP/cycle/core is read from the CPU family in
``/proc/cpuinfo``: AMD Zen 4 (family 25) executes AVX-512 on two 256-bit FMA pipes (16 fp32 FMAs =
32 FLOP a cycle), Zen 5 (family 26) on two full 512-bit FMA pipes (64 FLOP a cycle); an Intel core
with AVX-512 and two FMA units also does 64. The clock of a virtual machine is not visible (KVM shows
no MHz), so it is a parameter (``--ghz``, default 3.75: the clock at which the best measured matrix
product below equals the theoretical rate on this machine, 2026-11-26).

"Measured": the best of ``--repeats`` float32 ``n x n`` matrix products (2 n^3 FLOP each) with all
cores, in TensorFlow (oneDNN), NumPy (its BLAS) and PyTorch when installed. This is the rate a
convolution network can at best approach, and what ``bench_backbones.py --peak`` should be given.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)


def cpu_info() -> dict:
    info = {"model": "?", "family": None, "cores": os.cpu_count(), "avx512": False}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k == "model name":
                    info["model"] = v
                elif k == "cpu family" and info["family"] is None:
                    info["family"] = int(v)
                elif k == "vendor_id":
                    info["vendor"] = v
                elif k == "flags":
                    info["avx512"] = "avx512f" in v.split()
    except OSError:
        pass
    return info


def flop_per_cycle(info: dict) -> int:
    """fp32 FLOP per cycle per core (2 FMA pipes x lanes x 2)."""
    if info.get("vendor") == "AuthenticAMD":
        if info["family"] == 26:  # Zen 5: native 512-bit datapaths
            return 64
        if info["family"] == 25:  # Zen 3 (AVX2) / Zen 4 (AVX-512 double-pumped): 256-bit pipes
            return 32
    return 64 if info["avx512"] else 32


DEFAULT_GHZ = 3.75


def theoretical_peak(ghz: float = DEFAULT_GHZ) -> float:
    """This machine's fp32 peak in GFLOP/s: cores x FLOP/cycle (from the CPU family) x ``ghz``."""
    info = cpu_info()
    return info["cores"] * flop_per_cycle(info) * ghz


def load_summary() -> str:
    """The load averages, flagged as noisy when they exceed the core count (a benchmark itself keeps every
    core busy, so only a load above that means another job shared the CPU)."""
    load = os.getloadavg()
    shared = load[0] > (os.cpu_count() or 1) + 0.5
    return (f"load average (1, 5, 15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
            + ("  -- the CPU was shared: noisy numbers" if shared else ""))


def best_gflops(fn, n: int, repeats: int) -> float:
    fn()  # warm up (thread pools, allocation)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ghz", type=float, default=DEFAULT_GHZ, help="assumed clock for the theoretical peak")
    args = ap.parse_args()
    info = cpu_info()
    fpc = flop_per_cycle(info)
    print(f"CPU: {info['model']} (vendor {info.get('vendor')}, family {info['family']}), {info['cores']} cores, "
          f"AVX-512 {'yes' if info['avx512'] else 'no'}")
    print(f"theoretical fp32 peak: {info['cores']} cores x {fpc} FLOP/cycle x {args.ghz} GHz = "
          f"{info['cores'] * fpc * args.ghz:.0f} GFLOP/s")
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((args.n, args.n), dtype=np.float32)
    b = rng.standard_normal((args.n, args.n), dtype=np.float32)
    results = {"numpy": best_gflops(lambda: a @ b, args.n, args.repeats)}
    import tensorflow as tf

    ta, tb = tf.constant(a), tf.constant(b)
    mm = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)[:1, :1]))
    results["tensorflow"] = best_gflops(lambda: mm(ta, tb).numpy(), args.n, args.repeats)
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        pa, pb = torch.from_numpy(a), torch.from_numpy(b)
        results["torch"] = best_gflops(lambda: pa @ pb, args.n, args.repeats)
    except ImportError:
        pass
    for k, v in results.items():
        print(f"measured {args.n}x{args.n} fp32 matmul, {k:<10}: {v:7.1f} GFLOP/s")
    best = max(results.values())
    print(f"best measured: {best:.0f} GFLOP/s = {best / (info['cores'] * fpc):.2f} GHz at {fpc} FLOP/cycle/core; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
