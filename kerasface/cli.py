"""The ``kerasface`` command: ``train``, ``presets``, ``summary``, ``lowlight-grid``.

``python train_pairs.py ...`` is ``kerasface train ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

__all__ = ["main", "build_parser"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="vargface",
                   help="experiment preset (see `kerasface presets`); default: vargface")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="LFW folder or zip (default: the bundled sample data/lfw_sample)")
    g.add_argument("--train-pairs", help="training pairs list (default: pairs.txt, else pairsTrain.txt next to --data)")
    g.add_argument("--val-pairs", help="validation pairs list (default: pairsDevTest.txt, else pairsVal.txt)")
    g.add_argument("--image-size", type=int)
    g.add_argument("--center-crop", type=float, help="fraction of the image kept before resizing (1.0 = whole)")
    g.add_argument("--low-light", dest="low_light", action="store_true", default=None,
                   help="darken every image with the seeded low-light transform")
    g.add_argument("--no-low-light", dest="low_light", action="store_false")
    g.add_argument("--low-light-seed", type=int)
    g.add_argument("--augment", dest="augment", action="store_true", default=None,
                   help="random horizontal flips")
    g.add_argument("--on-missing", choices=("skip", "error"),
                   help="a pair naming a missing image: skip it (reported) or stop")
    g.add_argument("--on-corrupt", dest="on_error", choices=("skip", "error"),
                   help="an undecodable image: skip its pairs (logged) or stop")
    g = p.add_argument_group("model and optimisation")
    g.add_argument("--backbone", help="backbone name (see `kerasface summary --list`)")
    g.add_argument("--group-conv", choices=("auto", "native", "depthwise", "split"),
                   help="grouped-convolution path")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("output")
    g.add_argument("--out", help="parent folder of run folders (default: runs)")
    g.add_argument("--run-dir", help="exact run folder to write (default: OUT/PRESET-TIMESTAMP)")
    g.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasface", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="train a preset and write its run folder"))
    sub.add_parser("presets", help="list the experiment presets")
    s = sub.add_parser("summary", help="params, MACs and activation memory of a backbone")
    s.add_argument("name", nargs="?", help="backbone name")
    s.add_argument("--list", action="store_true", help="list the backbone names")
    s.add_argument("--input-size", type=int, default=112)
    s.add_argument("--per-layer", action="store_true")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    g = sub.add_parser("lowlight-grid", help="PNG of faces next to their low-light versions")
    g.add_argument("--data", help="LFW folder or zip (default: the bundled sample)")
    g.add_argument("--out", default="lowlight_grid.png")
    g.add_argument("-n", type=int, default=6, help="number of faces")
    g.add_argument("--seed", type=int, default=1234)
    return parser


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_train(args) -> int:
    from kerasface.experiments import get_pair_preset
    from kerasface.training import train_pairs

    cfg = get_pair_preset(args.preset)
    cfg = cfg.override(
        data=args.data, train_pairs=args.train_pairs, val_pairs=args.val_pairs,
        image_size=args.image_size, center_crop=args.center_crop, low_light=args.low_light,
        low_light_seed=args.low_light_seed, augment=args.augment, on_missing=args.on_missing,
        on_error=args.on_error, backbone=args.backbone, group_conv=args.group_conv,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seed, out=args.out,
    )
    print(f"kerasface: preset {cfg.name}: {cfg.description}", flush=True)
    result = train_pairs(cfg, run_dir=args.run_dir, verbose=2 if args.quiet else "auto")
    m = result.metrics
    print(f"\nrun folder: {result.run_dir}")
    print(f"validation accuracy: {m['final']['val_accuracy']:.4f} (best {m['best_val_accuracy']:.4f} "
          f"at epoch {m['best_val_accuracy_epoch']}), validation loss: {m['final']['val_loss']:.4f}, "
          f"on {m['val_pairs']} pairs after {m['epochs_run']} epochs")
    return 0


def _cmd_presets(args) -> int:
    from kerasface.experiments import PAIR_PRESETS

    for name, p in PAIR_PRESETS.items():
        print(f"{name:<28} {p.description}")
    return 0


def _cmd_summary(args) -> int:
    from kerasface.models import build_backbone, format_profile, list_backbones, profile_model

    if args.list or not args.name:
        print("\n".join(list_backbones()))
        return 0
    model = build_backbone(args.name, input_shape=(args.input_size, args.input_size, 3))
    prof = profile_model(model)
    if args.json:
        print(json.dumps(prof.as_dict(), indent=2))
    else:
        print(format_profile(prof, per_layer=args.per_layer))
    return 0


def _cmd_lowlight_grid(args) -> int:
    import numpy as np

    from kerasface.data import load_images, open_image_source, save_lowlight_grid
    from kerasface.experiments import bundled_sample_dir

    source = open_image_source(args.data or bundled_sample_dir())
    names = sorted(source.list_images())
    picks = [names[i] for i in np.linspace(0, len(names) - 1, args.n).astype(int)]
    images, _ = load_images(source, picks, size=112, progress=False)
    save_lowlight_grid(images, args.out, seed=args.seed,
                       title="LFW faces (top) and their low-light versions (bottom)")
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_tf()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"train": _cmd_train, "presets": _cmd_presets, "summary": _cmd_summary,
                "lowlight-grid": _cmd_lowlight_grid}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"kerasface {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
