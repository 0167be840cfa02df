"""``kerasface train-triplet`` (= ``python train_triplet.py``): flags and command of the triplet training run.

Kept apart from :mod:`kerasface.cli` so that the command's many flags live
next to nothing else; ``kerasface.cli`` registers the subcommand.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_train_triplet_args", "cmd_train_triplet", "parse_folds", "triplet_overrides"]

#: exit status of a run stopped because the embeddings collapsed
EXIT_COLLAPSED = 3


def parse_folds(text: str) -> tuple[int, ...]:
    """``"10"``, ``"1-9"``, ``"1,3,5-7"`` -> sorted fold numbers (from 1)."""
    out: set[int] = set()
    try:
        for part in text.replace(" ", "").split(","):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            a, b = int(lo), int(hi) if sep else int(lo)
            if a < 1 or b < a:
                raise ValueError
            out.update(range(a, b + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad fold list {text!r}: use e.g. 10, 1-9 or 1,3,5-7 (folds start at 1)") from None
    if not out:
        raise argparse.ArgumentTypeError(f"empty fold list {text!r}")
    return tuple(sorted(out))


def add_train_triplet_args(p: argparse.ArgumentParser) -> None:
    from kerasface.config import TRIPLET_MINING, TRIPLET_STACK_LOSSES

    p.add_argument("--preset", default="facenet-nn2",
                   help="triplet preset (see `kerasface presets`); default: facenet-nn2")
    g = p.add_argument_group("data (training identities never include the people of the evaluation pairs)")
    g.add_argument("--data", help="LFW folder or zip, any <identity>/<image> tree, or a path,label file list "
                                  "(default: the bundled sample data/lfw_sample)")
    g.add_argument("--pairs", help="folds list (default: pairs.txt next to --data when present)")
    g.add_argument("--holdout-folds", type=parse_folds, metavar="FOLDS",
                   help="folds of the folds list whose pairs are evaluated and whose people are left out "
                        "(default 10; e.g. 9,10)")
    g.add_argument("--train-folds", type=parse_folds, metavar="FOLDS",
                   help="train only on the people of these folds (e.g. 1-9; default: every person of --data "
                        "not in a held-out fold)")
    g.add_argument("--eval-pairs", help="evaluate on this pairs list instead (its people are left out of training); "
                                        "default without pairs.txt: pairsDevTest.txt, else pairsVal.txt")
    g.add_argument("--min-images", type=int, help="training identities need at least this many images (default 2)")
    g.add_argument("--image-size", type=int, help="input side (NN2: a multiple of 32)")
    g.add_argument("--center-crop", type=float, help="fraction of the image kept before resizing (1.0 = whole)")
    g.add_argument("--on-corrupt", dest="on_error", choices=("skip", "error"),
                   help="an undecodable training image: skip it (counted) or stop")
    g = p.add_argument_group("model")
    g.add_argument("--backbone", help="backbone name (see `kerasface summary --list`); non-NN2 backbones get an "
                                      "L2 normalisation on top")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--norm", choices=("batch", "lrn"), help="NN2 normalisation")
    g.add_argument("--no-l2-pooling", dest="l2_pooling", action="store_false", default=None,
                   help="NN2: max pooling where the table says L2")
    g.add_argument("--bn-momentum", type=float)
    g.add_argument("--group-conv", choices=("auto", "native", "depthwise", "split"),
                   help="grouped-convolution path (VarGFaceNet backbones)")
    g = p.add_argument_group("triplets and optimisation")
    g.add_argument("--mining", choices=TRIPLET_MINING,
                   help="offline: FaceNet's semi-hard selection within each chunk into the triplet graph; "
                        "batch_hard / semi_hard / batch_all: online mining in P x K batches")
    g.add_argument("--loss", choices=TRIPLET_STACK_LOSSES,
                   help="per-triplet loss (offline); online mining uses squared distances iff *_squared")
    g.add_argument("--margin", type=float, help="hinge margin (default 0.2, FaceNet's, on squared distances)")
    g.add_argument("--selection-fallback", choices=("skip", "hardest", "random"),
                   help="offline: an anchor-positive pair without a semi-hard negative")
    g.add_argument("--max-triplets-per-chunk", type=int, help="offline: train on at most this many (0: all)")
    g.add_argument("--chunk-size", type=int, help="images decoded at once (the report's trunks: 8000 / 1000)")
    g.add_argument("--images-per-identity", type=int, help="the most images of one identity in a chunk")
    g.add_argument("--chunk-mode", choices=("cover", "balanced"))
    g.add_argument("--k-images", type=int, help="online mining: K images per identity in a P x K batch")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="triplets per step (offline) or P x K images (online)")
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--seed", type=int)
    g = p.add_argument_group("monitoring and output")
    g.add_argument("--probe-size", type=int, help="fixed training faces embedded after each epoch (default 64)")
    g.add_argument("--collapse-floor", type=float,
                   help="stop when the probe faces' mean distance falls below this (default 0.05; 0: never)")
    g.add_argument("--verify-every", type=int,
                   help="verification on the evaluation pairs every N epochs (0: at the end only)")
    g.add_argument("--out", help="parent folder of run folders (default: runs)")
    g.add_argument("--run-dir", help="exact run folder to write (default: OUT/PRESET-TIMESTAMP)")
    g.add_argument("--quiet", action="store_true", help="one log line per chunk and epoch, no progress bars")
    from kerasface.training.distribute import add_runtime_args

    add_runtime_args(p)


_FIELDS = ("data", "pairs", "holdout_folds", "train_folds", "eval_pairs", "min_images", "image_size", "center_crop",
           "on_error", "backbone", "embedding_dim", "norm", "l2_pooling", "bn_momentum", "group_conv", "mining",
           "loss", "margin", "selection_fallback", "max_triplets_per_chunk", "chunk_size", "images_per_identity",
           "chunk_mode", "k_images", "epochs", "batch_size", "learning_rate", "seed", "probe_size",
           "collapse_floor", "verify_every", "out")


def triplet_overrides(args) -> dict:
    """The preset fields the parsed flags set (unset flags are None and leave the preset alone)."""
    return {f: getattr(args, f) for f in _FIELDS}


def cmd_train_triplet(args) -> int:
    from kerasface.presets import get_triplet_preset
    from kerasface.training.distribute import runtime_from_args

    runtime = runtime_from_args(args)
    runtime.make_strategy()  # multiworker: before TensorFlow runs anything
    from kerasface.training.triplet import train_triplet

    cfg = get_triplet_preset(args.preset).override(**triplet_overrides(args))
    print(f"kerasface: preset {cfg.name}: {cfg.description}", flush=True)
    result = train_triplet(cfg, run_dir=args.run_dir, verbose=2 if args.quiet else "auto", runtime=runtime)
    m = result.metrics
    f = m["final"]
    print(f"\nrun folder: {result.run_dir}")
    print(f"{m['epochs_run']} epoch(s) on {m['train_images']} images of {m['train_identities']} identities; "
          f"loss {m['first']['loss']:.4f} -> {f['loss']:.4f}; probe mean distance "
          f"{m['first']['probe_mean_distance']:.4f} -> {f['probe_mean_distance']:.4f}")
    v = m.get("verification")
    if v:
        acc = v.get("heldout_accuracy_mean")
        print(f"held-out verification on {v['pairs_accounting']['evaluated']} pairs: "
              + (f"accuracy {100 * acc:.2f} % ({v['heldout_accuracy_protocol']}), " if acc is not None else "")
              + f"best-threshold accuracy {100 * v['best_threshold_accuracy']:.2f} %, "
              + (f"AUC {v['auc']:.4f}, EER {v['eer_percent']:.2f} %" if v["auc"] is not None else "AUC n/a"))
    if m.get("stopped"):
        print(f"kerasface train-triplet: stopped: {m['stopped']}", file=sys.stderr)
        return EXIT_COLLAPSED if m.get("collapse") else 1
    return 0
