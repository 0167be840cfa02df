"""Keras/TensorFlow vs the same network written directly in PyTorch, on this CPU.

    python benchmarks/bench_torch_parity.py [--batch 64] [--steps 5] [--size 224] [--rounds 2]

The network is report 003's ResNet34 (torchvision layout, fc replaced by a 512-d Linear embedding)
plus a float32 100-way classifier, trained with Adam (lr 1e-4) and sparse cross entropy on one batch
of real LFW faces from the bundled sample, and the backbone alone in inference. The Keras side is
``kerasface.models.resnet34`` timed by ``bench_backbones.bench_one`` (``train_on_batch``); the PyTorch
side is written below (channels-last memory format, ``torch.set_num_threads(os.cpu_count())``), with
the same layer shapes, parameter count and FLOPs.

Each framework runs in its own process, alternating ``keras, torch, keras, torch, ...`` ``--rounds``
times, so a change in the machine's load hits both; the first (tracing) step and ``--warmup`` more
are not timed, the mean of ``--steps`` timed steps is one figure, and the table shows every round.
PyTorch is optional (``pip install torch``); without it only the Keras rows print.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cpu_peak import theoretical_peak  # noqa: E402

PEAK_GFLOPS = theoretical_peak()


def torch_resnet34(embedding_dim: int = 512, classes: int = 100):
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.proj = None
            if stride != 1 or cin != cout:
                self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + (x if self.proj is None else self.proj(x)))

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for s, (n, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for i in range(n):
            layers.append(Block(cin, w, 2 if (s > 0 and i == 0) else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, embedding_dim)]
    backbone = nn.Sequential(*layers)
    return backbone, nn.Sequential(backbone, nn.Linear(embedding_dim, classes))


def run_torch(batch: int, steps: int, warmup: int, size: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from bench_backbones import faces

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    backbone, model = torch_resnet34()
    model = model.to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.ascontiguousarray(faces(size, size, batch).transpose(0, 3, 1, 2)))
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.arange(batch) % 100).long()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    row = {"framework": f"torch {torch.__version__}", "batch": batch, "input": size,
           "params_backbone_m": round(sum(p.numel() for p in backbone.parameters()) / 1e6, 2),
           "threads": torch.get_num_threads()}

    def infer():
        with torch.inference_mode():
            backbone(x)

    def train():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return float(loss)

    def timed(fn, key):
        """First call (not timed in the rate), ``warmup`` more, then images/s over ``steps`` calls."""
        t0 = time.perf_counter()
        fn()
        row[f"{key}_first_s"] = round(time.perf_counter() - t0, 1)
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = fn()
        row[f"{key}_img_s"] = round(batch * steps / (time.perf_counter() - t0), 2)
        return out

    backbone.eval()
    timed(infer, "infer")
    model.train()
    loss = timed(train, "train")
    row["loss_finite"] = bool(np.isfinite(loss))
    return row


def run_keras(batch: int, steps: int, warmup: int, size: int) -> dict:
    import bench_backbones
    import keras
    import tensorflow as tf

    r = bench_backbones.bench_one("resnet34", "off", False, batch, steps, warmup, True, input_shape=(size, size, 3))
    r["framework"] = f"keras {keras.__version__} / tf {tf.__version__}"
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="input side (divisible by 32)")
    ap.add_argument("--rounds", type=int, default=2, help="keras/torch alternations")
    ap.add_argument("--one", choices=("keras", "torch"), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also append the rows (JSON lines) to this file")
    args = ap.parse_args()
    if args.one:
        fn = run_keras if args.one == "keras" else run_torch
        print("ROW " + json.dumps(fn(args.batch, args.steps, args.warmup, args.size)), flush=True)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)
    sys.path.insert(0, str(HERE.parent))
    from kerasface.models import profile_model, resnet34

    gflop = 2 * profile_model(resnet34(input_shape=(args.size, args.size, 3))).macs / 1e9
    try:
        import torch  # noqa: F401
        frameworks = ("keras", "torch")
    except ImportError:
        print("PyTorch is not installed: Keras rows only (pip install torch)")
        frameworks = ("keras",)
    print(f"ResNet34 {args.size}x{args.size}, {gflop:.3f} GFLOP/image forward, batch {args.batch}, "
          f"peak {PEAK_GFLOPS:.0f} GFLOP/s")
    print(f"{'round':>5} {'framework':<28} {'train img/s':>11} {'%peak':>6} {'infer img/s':>11} {'%peak':>6} "
          f"{'1st train s':>11} {'load':>5}")
    for rnd in range(1, args.rounds + 1):
        for fw in frameworks:
            cmd = [sys.executable, __file__, "--one", fw, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--size", str(args.size)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            rows = [ln[4:] for ln in out.stdout.splitlines() if ln.startswith("ROW ")]
            if out.returncode or not rows:
                print(f"{rnd:>5} {fw}: failed: {out.stderr[-500:]}")
                continue
            r = json.loads(rows[-1])
            r.update(round=rnd, gflops_per_image=round(gflop, 3), load_1min=round(os.getloadavg()[0], 2))
            print(f"{rnd:>5} {r['framework']:<28} {r['train_img_s']:>11} "
                  f"{100 * r['train_img_s'] * 3 * gflop / PEAK_GFLOPS:>5.1f}% {r['infer_img_s']:>11} "
                  f"{100 * r['infer_img_s'] * gflop / PEAK_GFLOPS:>5.1f}% {r['train_first_s']:>11} "
                  f"{r['load_1min']:>5}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
