"""kerasface against whole-network PyTorch twins, timed interleaved in one process.

    python benchmarks/torch_twins.py [--model vargfacenet] [--batch 32] [--steps 3] [--rounds 3]
        [--group-conv auto] [--rules avx512,avx2,pre17] [--threads N] [--no-infer] [--json out.jsonl]

Models (``--model``, comma-separated):

* ``vargfacenet`` / ``vargfacenet_reduced``: report 000's Siamese verifier (shared backbone on both faces,
  ``|f1 - f2|``, dropout, Dense(64, relu), dropout, Dense(2, softmax)), 112x112, Adam and sparse cross
  entropy; a batch is ``--batch`` *pairs* (2 x batch images through the backbone). kerasface side:
  ``kerasface.training.build_verifier`` with the ``vargface`` preset (``--group-conv`` path).
* ``sqnxt23v5_w1`` / ``sqnxt23v5_w2``: report 002's students (report layout, 218x178, 128-d pooled
  embedding) plus the report's classifier Dense(2360) with bias, Adam and sparse cross entropy on logits;
  a batch is ``--batch`` images.

The PyTorch twins below have the same layers, shapes and trainable parameter count (asserted) and the
same FLOPs; they run channels-last with ``torch.set_num_threads(--threads)`` (default: every core; TensorFlow's
pools get the same number when it is given). Differences that do
not change the work: PyTorch pads a stride-2 3x3 conv symmetrically where TensorFlow pads (0, 1).

Both models are built and their first training step timed. For Keras that is the trainers' first step:
the optimizer's and metrics' variables built first (``kerasface.training.runner.build_before_tracing``,
as every kerasface trainer does; without it Keras traces the step twice), then graph tracing, grappler and
the first run, with kerasface's ``FusedAdam`` (the trainers' optimizer). Then ``--rounds``
rounds alternate ``--steps`` Keras training steps with ``--steps`` PyTorch ones (and the same for
inference of the backbone alone, ``training=False`` / ``eval()`` + ``inference_mode``), so a change of the
machine's load hits both. The table gives every round and the median rate. GFLOP/s = 2 x
``profile_model`` MACs per image x images/s (x 3 for a training step); % of ``cpu_peak.theoretical_peak()``.
PyTorch is an optional benchmark extra (``pip install torch``), never a kerasface dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the kerasface command does (kerasface.runtime)
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

MODELS = ("vargfacenet", "vargfacenet_reduced", "sqnxt23v5_w1", "sqnxt23v5_w2")
SQNXT_CLASSES = 2360


# --- PyTorch twins ---------------------------------------------------------------------------------


def torch_vargfacenet(normal_blocks=(2, 6, 3), channels=(40, 80, 160, 320), last_channels=1024,
                      embedding_dim=512, group_base=8, se_ratio=4, factor=2, input_hw=(112, 112)):
    """The layers of :func:`kerasface.models.vargfacenet.VarGFaceNet`, in PyTorch."""
    from torch import nn

    def bn(c):
        return nn.BatchNorm2d(c, eps=2e-5, momentum=0.1)

    def prelu(c):
        return nn.PReLU(c, init=0.25)

    class Separable(nn.Module):
        def __init__(self, cin, cout, stride, fac, pw_act):
            super().__init__()
            mid = cin * fac
            self.body = nn.Sequential(
                nn.Conv2d(cin, mid, 3, stride, 1, groups=cin // group_base, bias=False), bn(mid), prelu(mid),
                nn.Conv2d(mid, cout, 1, bias=False), bn(cout), *([prelu(cout)] if pw_act else []))

        def forward(self, x):
            return self.body(x)

    class SqueezeExcite(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // se_ratio, 1, bias=False),
                                      prelu(c // se_ratio), nn.Conv2d(c // se_ratio, c, 1, bias=False),
                                      nn.Sigmoid())

        def forward(self, x):
            return x * self.gate(x)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, fac):
            super().__init__()
            self.shortcut = (None if stride == 1 and cin == cout
                             else Separable(cin, cout, stride, fac, False))
            self.sep1 = Separable(cin, cout, stride, fac, True)
            self.sep2 = Separable(cout, cout, 1, fac, False)
            self.se = SqueezeExcite(cout)
            self.out = prelu(cout)

        def forward(self, x):
            s = x if self.shortcut is None else self.shortcut(x)
            return self.out(self.se(self.sep2(self.sep1(x))) + s)

    class DownBlock(nn.Module):
        def __init__(self, cin, cout, fac):
            super().__init__()
            self.shortcut = Separable(cin, cout, 2, fac, False)
            self.b1 = Separable(cin, cout, 2, fac, False)
            self.b2 = Separable(cin, cout, 2, fac, False)
            self.merge = prelu(cout)
            self.sep2 = Separable(cout, cout, 1, fac, False)
            self.out = prelu(cout)

        def forward(self, x):
            y = self.sep2(self.merge(self.b1(x) + self.b2(x)))
            return self.out(y + self.shortcut(x))

    layers = [nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), bn(channels[0]), prelu(channels[0]),
              Block(channels[0], channels[0], 2, 1)]
    for s, repeats in enumerate(normal_blocks):
        layers.append(DownBlock(channels[s], channels[s + 1], factor))
        layers += [Block(channels[s + 1], channels[s + 1], 1, factor) for _ in range(repeats)]
    kh, kw = input_hw[0] // 16, input_hw[1] // 16
    layers += [nn.Conv2d(channels[3], last_channels, 1, bias=False), bn(last_channels), prelu(last_channels),
               nn.Conv2d(last_channels, last_channels, (kh, kw), groups=last_channels // group_base, bias=False),
               bn(last_channels),
               nn.Conv2d(last_channels, last_channels // 2, 1, bias=False), bn(last_channels // 2),
               prelu(last_channels // 2), nn.Flatten(),
               nn.Linear(last_channels // 2, embedding_dim, bias=False),
               nn.BatchNorm1d(embedding_dim, eps=2e-5, momentum=0.1)]
    return nn.Sequential(*layers)


def torch_verifier(backbone, embedding_dim=512, hidden_units=64, dropout=0.5):
    """Report 000's Siamese head on a shared backbone (logits; the loss applies the softmax)."""
    from torch import nn

    class Verifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = backbone
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, hidden_units), nn.ReLU(),
                                      nn.Dropout(dropout), nn.Linear(hidden_units, 2))

        def forward(self, a, b):
            return self.head((self.backbone(a) - self.backbone(b)).abs())

    return Verifier()


def torch_sqnxt23v5(width=1.0, classes=SQNXT_CLASSES, dropout=0.2):
    """:func:`kerasface.models.squeezenext.sqnxt23v5` (report layout) + Dense(classes), in PyTorch."""
    from torch import nn

    def conv(cin, cout, k, stride=1, pad=None):
        if pad is None:
            pad = (k[0] // 2, k[1] // 2) if isinstance(k, tuple) else k // 2
        return [nn.Conv2d(cin, cout, k, stride, pad, bias=False), nn.BatchNorm2d(cout, eps=1e-5), nn.ReLU()]

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(*conv(c, c // 2, 1), *conv(c // 2, c // 4, 1), *conv(c // 4, c // 2, (3, 1)),
                                      *conv(c // 2, c // 2, (1, 3)), *conv(c // 2, c, 1))

        def forward(self, x):
            return x + self.body(x)

    widths = [int(round(c * width)) for c in (32, 64, 128, 256)]
    layers = [*conv(3, 64, 5, 2, 0), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for s, (n, c) in enumerate(zip((2, 4, 14, 1), widths), start=1):
        layers += conv(cin, c, 1, 1 if s == 1 else 2)
        layers += [Block(c) for _ in range(n)]
        cin = c
    layers += [*conv(cin, 128, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout)]
    backbone = nn.Sequential(*layers)
    return backbone, nn.Sequential(backbone, nn.Linear(128, classes))


def torch_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# --- the two sides -----------------------------------------------------------------------------------


#: ``--rules``: other grouped-conv rules, each a kerasface side of its own (VarGFaceNet verifiers only)
RULES = {"pre17": "the rule before issue 17 (split <= 32 groups, else depthwise)",
         "avx512": "the block rule measured on AVX-512 CPUs", "avx2": "the block rule measured on AVX2 CPUs"}


def rule_side(name: str, batch: int, rule: str) -> dict:
    """kerasface with another ``GroupConv2D`` rule than this machine's ``auto``, for a before/after comparison in
    the same run: ``pre17`` or the block rule of the other CPU kind (``avx512`` / ``avx2``)."""
    import tensorflow as tf
    from bench_backbones import faces

    from kerasface.layers import GroupConv2D, group_conv_block_groups, resolve_group_conv_implementation
    from kerasface.presets import get_pair_preset
    from kerasface.training import build_verifier

    model = build_verifier(get_pair_preset("vargface").override(backbone=name, group_conv="auto"))
    backbone = model.get_layer(name)
    for layer in backbone.layers:
        if not isinstance(layer, GroupConv2D):
            continue
        if rule == "pre17":  # read when the layer is traced
            layer.implementation = "split" if layer.groups <= 32 else "depthwise"
            continue
        shape = tuple(layer.input.shape)
        if resolve_group_conv_implementation("auto", layer.groups, input_shape=shape, kernel_size=layer.kernel_size,
                                             padding=layer.padding) == "blockdiag":
            out = layer.compute_output_shape(shape)
            layer.block_groups = group_conv_block_groups(layer.groups, layer.in_channels // layer.groups,
                                                         out[1] * out[2], avx512=rule == "avx512")
    imgs = faces(112, 112, 2 * batch)
    a, b = tf.constant(imgs[:batch]), tf.constant(imgs[batch:])
    y = tf.constant(np.random.default_rng(0).integers(0, 2, batch), tf.int32)
    both = tf.constant(imgs)
    infer_fn = tf.function(lambda t: backbone(t, training=False))
    return {"train": lambda: model.train_on_batch([a, b], y), "infer": lambda: infer_fn(both).numpy(),
            "params": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
            "label": f"kerasface, {RULES[rule]}"}


def build_pair(name: str, batch: int, group_conv: str):
    """(keras side, torch side, GFLOP per image forward, images per step, unit): each side is a dict of
    ``train()`` / ``infer()`` closures and its trainable parameter count."""
    import keras
    import numpy as np
    import tensorflow as tf
    import torch
    import torch.nn.functional as F
    from bench_backbones import faces

    from kerasface.models import build_backbone, profile_model
    from kerasface.optimizers import FusedAdam
    from kerasface.training.runner import build_before_tracing

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if name.startswith("vargfacenet"):
        from kerasface.presets import get_pair_preset
        from kerasface.training import build_verifier

        cfg = get_pair_preset("vargface").override(backbone=name, group_conv=group_conv)
        model = build_verifier(cfg)
        backbone = model.get_layer(name)
        imgs = faces(112, 112, 2 * batch)
        a, b = tf.constant(imgs[:batch]), tf.constant(imgs[batch:])
        y = tf.constant(rng.integers(0, 2, batch), tf.int32)
        both = tf.constant(imgs)
        keras_data = tf.data.Dataset.from_tensors(((a, b), y))
        keras_train = lambda: model.train_on_batch([a, b], y)  # noqa: E731
        blocks = (2, 6, 3) if name == "vargfacenet" else (2, 4, 3)
        tb = torch_vargfacenet(normal_blocks=blocks)
        tm = torch_verifier(tb).to(memory_format=torch.channels_last)
        ta = torch.from_numpy(np.ascontiguousarray(imgs[:batch].transpose(0, 3, 1, 2))).contiguous(
            memory_format=torch.channels_last)
        tbb = torch.from_numpy(np.ascontiguousarray(imgs[batch:].transpose(0, 3, 1, 2))).contiguous(
            memory_format=torch.channels_last)
        tboth = torch.cat([ta, tbb]).contiguous(memory_format=torch.channels_last)
        ty = torch.from_numpy(np.array(y)).long()
        opt = torch.optim.Adam(tm.parameters(), lr=cfg.learning_rate)

        def torch_train():
            tm.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tm(ta, tbb), ty)
            loss.backward()
            opt.step()

        images_per_step, unit = 2 * batch, "pairs"
        keras_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    else:
        backbone = build_backbone(name)
        h, w = backbone.input_shape[1:3]
        inp = keras.Input(backbone.input_shape[1:])
        model = keras.Model(inp, keras.layers.Dense(SQNXT_CLASSES, dtype="float32")(backbone(inp)))
        model.compile(FusedAdam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        both = tf.constant(faces(h, w, batch))
        y = tf.constant(rng.integers(0, SQNXT_CLASSES, batch), tf.int32)
        keras_data = tf.data.Dataset.from_tensors((both, y))
        keras_train = lambda: model.train_on_batch(both, y)  # noqa: E731
        tb, tm = torch_sqnxt23v5(1.0 if name.endswith("w1") else 2.0)
        tm = tm.to(memory_format=torch.channels_last)
        tboth = torch.from_numpy(np.ascontiguousarray(np.asarray(both).transpose(0, 3, 1, 2))).contiguous(
            memory_format=torch.channels_last)
        ty = torch.from_numpy(np.array(y)).long()
        opt = torch.optim.Adam(tm.parameters(), lr=1e-3)

        def torch_train():
            tm.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(tm(tboth), ty)
            loss.backward()
            opt.step()

        images_per_step, unit = batch, "images"
        keras_trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)

    infer_fn = tf.function(lambda t: backbone(t, training=False))

    def keras_infer():
        infer_fn(both).numpy()

    def torch_infer():
        tb.eval()
        with torch.inference_mode():
            tb(tboth)

    if torch_params(tm) != keras_trainable:
        raise AssertionError(f"{name}: PyTorch twin has {torch_params(tm):,} trainable parameters, "
                             f"kerasface {keras_trainable:,}")
    gflop = 2 * profile_model(backbone).macs / 1e9
    step_once = keras_train

    def keras_train():  # the first call builds the variables as the trainers do, then steps
        if not model.optimizer.built:
            build_before_tracing(model, keras_data)
        step_once()

    keras_side = {"train": keras_train, "infer": keras_infer, "params": keras_trainable,
                  "label": f"kerasface (keras {keras.__version__}, tf {tf.__version__}, {group_conv})"}
    torch_side = {"train": torch_train, "infer": torch_infer, "params": torch_params(tm),
                  "label": f"PyTorch {torch.__version__} twin"}
    return keras_side, torch_side, gflop, images_per_step, unit, int(both.shape[0])


def _rate(fn, steps: int, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return n * steps / (time.perf_counter() - t0)


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def run(name: str, args) -> list[dict]:
    import torch
    from cpu_peak import theoretical_peak

    torch.set_num_threads(args.threads)
    peak = theoretical_peak()
    k, t, gflop, ips, unit, infer_batch = build_pair(name, args.batch, args.group_conv)
    print(f"\n{name}: {gflop:.3f} GFLOP/image forward, {k['params']:,} trainable parameters in both, "
          f"batch {args.batch} {unit} ({ips} images per training step), peak {peak:.0f} GFLOP/s, "
          f"load {load()}", flush=True)
    sides = {"kerasface": k, "torch": t}
    if name.startswith("vargfacenet"):
        for rule in args.rules:
            sides[f"rule_{rule}"] = rule_side(name, args.batch, rule)
    if not args.torch:
        del sides["torch"]
    if not args.keras:  # the model is built (parameter check, FLOPs) but never run: the twin alone in this process
        del sides["kerasface"]
    first = {}
    for key, side in sides.items():
        t0 = time.perf_counter()
        side["train"]()
        first[key] = time.perf_counter() - t0
        side["train"]()  # one untimed warm-up step
        if args.infer:
            side["infer"]()
            side["infer"]()
    rates = {key: {"train": [], "infer": []} for key in sides}
    for _ in range(args.rounds):
        for key, side in sides.items():
            rates[key]["train"].append(_rate(side["train"], args.steps, ips))
        if args.infer:
            for key, side in sides.items():
                rates[key]["infer"].append(_rate(side["infer"], args.steps, infer_batch))
    per = 2 if unit == "pairs" else 1
    rows = []
    print(f"| model | framework | train {unit}/s (median; rounds) | train GFLOP/s | % peak | "
          "infer img/s (median) | infer GFLOP/s | % peak | first train step (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key, side in sides.items():
        tr = statistics.median(rates[key]["train"])  # images/s
        row = {"model": name, "framework": side["label"], "params": side["params"], "batch": args.batch,
               "unit": unit, f"train_{unit}_per_s": round(tr / per, 2),
               "train_rounds": [round(r / per, 2) for r in rates[key]["train"]],
               "train_gflop_s": round(tr * 3 * gflop, 1), "first_train_step_s": round(first[key], 1)}
        line = (f"| {name} | {side['label']} | {tr / per:.2f} ("
                + ", ".join(f"{r / per:.2f}" for r in rates[key]["train"])
                + f") | {tr * 3 * gflop:.0f} | {100 * tr * 3 * gflop / peak:.1f} % | ")
        if args.infer:
            inf = statistics.median(rates[key]["infer"])
            row.update(infer_img_per_s=round(inf, 1), infer_rounds=[round(r, 1) for r in rates[key]["infer"]],
                       infer_gflop_s=round(inf * gflop, 1))
            line += f"{inf:.1f} | {inf * gflop:.0f} | {100 * inf * gflop / peak:.1f} % | "
        else:
            line += "- | - | - | "
        line += f"{first[key]:.1f} |"
        print(line, flush=True)
        rows.append(row)
    for other in sides:
        if other == "kerasface" or "kerasface" not in sides:
            continue
        ratio = statistics.median(rates["kerasface"]["train"]) / statistics.median(rates[other]["train"])
        msg = f"kerasface / {other}: training {ratio:.2f}x"
        if args.infer:
            inf_ratio = statistics.median(rates["kerasface"]["infer"]) / statistics.median(rates[other]["infer"])
            msg += f", inference {inf_ratio:.2f}x"
        print(msg + f" (load {load()})", flush=True)
    for row in rows:
        row["load_end"] = load()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vargfacenet", help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--batch", type=int, default=32, help="pairs (verifiers) or images (SqNxt) per step")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per framework and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--group-conv", default="auto", help="GroupConv2D path of the kerasface side")
    ap.add_argument("--no-infer", dest="infer", action="store_false")
    ap.add_argument("--no-torch", dest="torch", action="store_false", help="leave the PyTorch twin out")
    ap.add_argument("--no-keras", dest="keras", action="store_false",
                    help="time the PyTorch twin alone (with --no-torch in another process: each framework in its own "
                         "process, so neither's idle threads spin against the other's)")
    ap.add_argument("--rules", default="", help=f"comma-separated kerasface sides with another grouped-conv rule "
                    f"(VarGFaceNet): {', '.join(f'{k} = {v}' for k, v in RULES.items())}")
    ap.add_argument("--old-rule", action="store_true", help="the same as --rules pre17")
    ap.add_argument("--json", help="append the rows (JSON lines) to this file")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="threads of each framework (TensorFlow's intra- and inter-op pools, torch.set_num_threads)")
    args = ap.parse_args()
    if args.threads != os.cpu_count():  # before TensorFlow is imported
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = str(args.threads)
    args.rules = [r for r in args.rules.split(",") if r] + (["pre17"] if args.old_rule else [])
    bad = sorted(set(args.rules) - set(RULES))
    if bad:
        raise SystemExit(f"--rules: unknown {bad} (of {', '.join(RULES)})")
    for name in args.model.split(","):
        if name not in MODELS:
            raise SystemExit(f"--model: unknown {name!r} (one of {', '.join(MODELS)})")
    print(f"load average at start: {open('/proc/loadavg').read().strip()}")
    for name in args.model.split(","):
        rows = run(name, args)
        if args.json:
            with open(args.json, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
    print(f"load average at end: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
