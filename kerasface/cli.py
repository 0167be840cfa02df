"""The ``kerasface`` command: ``train``, ``train-triplet``, ``train-classify``, ``evaluate``, ``presets``, ``summary``, ``lowlight-grid``, ``align``, ``pack``.

``python train_pairs.py ...`` is ``kerasface train ...``; ``python train_triplet.py ...`` is
``kerasface train-triplet ...`` (its flags: :mod:`kerasface.cli_triplet`); ``python train_classify.py ...``
is ``kerasface train-classify ...`` (:mod:`kerasface.cli_classify`). ``kerasface train --preset NAME`` runs
any preset: triplet and classification presets are routed to their own command.
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
    g.add_argument("--verify-every", type=int,
                   help="verification metrics (AUC, EER) on the validation pairs every N epochs (0: at the end only)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="parent folder of run folders (default: runs)")
    g.add_argument("--run-dir", help="exact run folder to write (default: OUT/PRESET-TIMESTAMP); an existing, "
                                     "unfinished run folder of the same settings is resumed after its last finished epoch")
    g.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    from kerasface.training.distribute import add_runtime_args

    add_runtime_args(p)  # --strategy, --mixed-precision, --jit-compile


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasface", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train_args(sub.add_parser("train", help="train a preset and write its run folder"))
    sub.add_parser("presets", help="list the experiment presets")
    s = sub.add_parser("summary", help="params, MACs and activation memory of a backbone")
    s.add_argument("name", nargs="?", help="backbone name")
    s.add_argument("--list", action="store_true", help="list the backbone names")
    s.add_argument("--input-size", type=int, help="input side (default: the backbone's own, e.g. 112 or 224)")
    s.add_argument("--per-layer", action="store_true")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    g = sub.add_parser("lowlight-grid", help="PNG of faces next to their low-light versions")
    g.add_argument("--data", help="LFW folder or zip (default: the bundled sample)")
    g.add_argument("--out", default="lowlight_grid.png")
    g.add_argument("-n", type=int, default=6, help="number of faces")
    g.add_argument("--seed", type=int, default=1234)
    _add_align_args(sub.add_parser(
        "align", help="detect (MTCNN) and align the faces of a folder tree or zip; resumable, with a CSV report"))
    from kerasface.cli_triplet import add_train_triplet_args

    add_train_triplet_args(sub.add_parser(
        "train-triplet", help="train a triplet-loss embedding (FaceNet NN2, report 004) and write its run folder"))
    from kerasface.cli_classify import add_train_classify_args

    add_train_classify_args(sub.add_parser(
        "train-classify", help="train an embedding by classification (AM-softmax, ArcFace, softmax) or the angular "
                               "prototypical loss (reports 001, 003) and write its run folder"))
    _add_evaluate_args(sub.add_parser(
        "evaluate", help="verification metrics of a saved model on a pairs list (10-fold, ROC, EER, TAR@FAR)"))
    from kerasface.cli_pack import add_pack_args

    add_pack_args(sub.add_parser(
        "pack", help="images (aligned crops or raw) into TFRecord shards with labels and an identity index; resumable"))
    return parser


def _add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="saved .keras model (embedding model, Siamese verifier or triplet graph), "
                                 "or 'raw-pixels' for the non-learned baseline")
    p.add_argument("--data", help="LFW folder or zip (default: the bundled sample data/lfw_sample)")
    p.add_argument("--pairs", help="pairs list (default: pairs.txt, else pairsDevTest.txt, else pairsVal.txt next to --data)")
    p.add_argument("--metric", choices=("cosine", "l2", "l2sq"), default="cosine",
                   help="pair score of embedding models (default: cosine)")
    p.add_argument("--flip", action="store_true",
                   help="flip TTA: sum the embeddings of each face and its mirror, then L2-normalise")
    p.add_argument("--image-size", type=int, help="input side (default: the model's; raw-pixels: 64)")
    p.add_argument("--center-crop", type=float, default=1.0,
                   help="fraction of the image kept before resizing (default 1.0: whole image)")
    p.add_argument("--normalization", choices=("kerasface", "unit", "raw"), default="kerasface",
                   help="pixel scaling the model expects: kerasface (x-127.5)/128 (default), unit x/255, raw 0..255")
    p.add_argument("--low-light-seed", type=int,
                   help="darken every face with the report-000 low-light transform of this seed "
                        "(the vargface-lowlight presets use 1234)")
    p.add_argument("--backbone-only", action="store_true",
                   help="Siamese verifier or triplet graph: score pairs with its shared embedding model "
                        "(--metric) instead of the verifier's 'same' probability")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--on-missing", choices=("skip", "error"), default="skip",
                   help="pairs naming a missing image: leave them out (counted, listed) or stop")
    p.add_argument("--cases", type=int, default=6, help="hardest pairs of each kind drawn in cases.png (0: none)")
    p.add_argument("--out", help="folder for metrics.json, roc.png, cases.png "
                                 "(default: next to the model, eval-<pairs name>)")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the table")


def _quiet_tf() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cmd_train(args) -> int:
    from kerasface.training.distribute import runtime_from_args

    runtime = runtime_from_args(args)
    runtime.make_strategy()  # multiworker: before TensorFlow runs anything
    from kerasface.presets import get_pair_preset
    from kerasface.training import train_pairs

    from kerasface.presets import find_preset

    find_preset(args.preset)  # an unknown name: the error lists every preset of every trainer
    cfg = get_pair_preset(args.preset)
    cfg = cfg.override(
        data=args.data, train_pairs=args.train_pairs, val_pairs=args.val_pairs,
        image_size=args.image_size, center_crop=args.center_crop, low_light=args.low_light,
        low_light_seed=args.low_light_seed, augment=args.augment, on_missing=args.on_missing,
        on_error=args.on_error, backbone=args.backbone, group_conv=args.group_conv,
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        seed=args.seed, verify_every=args.verify_every, out=args.out,
    )
    print(f"kerasface: preset {cfg.name}: {cfg.description}", flush=True)
    result = train_pairs(cfg, run_dir=args.run_dir, verbose=2 if args.quiet else "auto", runtime=runtime)
    m = result.metrics
    print(f"\nrun folder: {result.run_dir}")
    print(f"validation accuracy: {m['final']['val_accuracy']:.4f} (best {m['best_val_accuracy']:.4f} "
          f"at epoch {m['best_val_accuracy_epoch']}), validation loss: {m['final']['val_loss']:.4f}, "
          f"on {m['val_pairs']} pairs after {m['epochs_run']} epochs")
    for part, r in (m.get("data") or {}).items():
        if r.get("missing") or r.get("corrupt"):
            print(f"{part} pairs skipped: {r.get('missing', 0)} naming missing images, "
                  f"{r.get('corrupt', 0)} touching corrupt images (see data_report.json)")
    return 0


def _cmd_train_triplet(args) -> int:
    from kerasface.cli_triplet import cmd_train_triplet

    return cmd_train_triplet(args)


def _cmd_train_classify(args) -> int:
    from kerasface.cli_classify import cmd_train_classify

    return cmd_train_classify(args)


def _cmd_presets(args) -> int:
    from kerasface.presets import CLASSIFY_PRESETS, PAIR_PRESETS, TRIPLET_PRESETS

    for script, presets in (("train_pairs.py", PAIR_PRESETS), ("train_triplet.py", TRIPLET_PRESETS),
                            ("train_classify.py", CLASSIFY_PRESETS)):
        for name, p in presets.items():
            print(f"{name:<28} {script:<17} {p.description}")
    return 0


def _cmd_summary(args) -> int:
    from kerasface.models import build_backbone, format_profile, list_backbones, profile_model

    if args.list or not args.name:
        print("\n".join(list_backbones()))
        return 0
    kwargs = {"input_shape": (args.input_size, args.input_size, 3)} if args.input_size else {}
    model = build_backbone(args.name, **kwargs)
    prof = profile_model(model)
    if args.json:
        print(json.dumps(prof.as_dict(), indent=2))
    else:
        print(format_profile(prof, per_layer=args.per_layer))
    return 0


def _cmd_lowlight_grid(args) -> int:
    import numpy as np

    from kerasface.data import load_images, open_image_source, save_lowlight_grid
    from kerasface.data.locations import bundled_sample_dir

    source = open_image_source(args.data or bundled_sample_dir())
    names = sorted(source.list_images())
    picks = [names[i] for i in np.linspace(0, len(names) - 1, args.n).astype(int)]
    images, _ = load_images(source, picks, size=112, progress=False)
    save_lowlight_grid(images, args.out, seed=args.seed,
                       title="LFW faces (top) and their low-light versions (bottom)")
    print(f"wrote {args.out}")
    return 0


def _cmd_evaluate(args) -> int:
    from pathlib import Path

    from kerasface.data.locations import bundled_sample_dir

    data = Path(args.data) if args.data else bundled_sample_dir()
    if not data.exists():
        raise FileNotFoundError(f"--data not found: {str(data)!r}")
    pairs = Path(args.pairs) if args.pairs else None
    if pairs is not None and not pairs.is_file():
        raise FileNotFoundError(f"--pairs not found: {str(pairs)!r}")

    import keras

    import kerasface  # noqa: F401  (registers the custom layers)
    from kerasface.evaluation.baselines import BASELINES
    from kerasface.evaluation.verification import default_pairs_file, evaluate_to_dir

    pairs = pairs or default_pairs_file(data)
    if args.model in BASELINES:
        model = BASELINES[args.model](args.image_size or 64)
        default_out = Path("runs") / f"{args.model}-eval-{pairs.stem}"
    else:
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {str(path)!r} (a .keras file, or one of {sorted(BASELINES)})")
        model = keras.saving.load_model(path)
        default_out = path.parent / f"eval-{pairs.stem}"
        if args.backbone_only:
            from kerasface.evaluation.embeddings import embedding_submodel

            model = embedding_submodel(model)
            default_out = path.parent / f"eval-{pairs.stem}-backbone"
    out = Path(args.out) if args.out else default_out
    print(f"kerasface evaluate: {args.model} on {pairs} (images from {data})", flush=True)
    result = evaluate_to_dir(
        model, data, pairs, out, n_cases=args.cases, title=Path(args.model).name,
        metric=args.metric, flip=args.flip, image_size=args.image_size, center_crop=args.center_crop,
        normalization=args.normalization, low_light_seed=args.low_light_seed,
        batch_size=args.batch_size, on_missing=args.on_missing,
        verbose=2 if not sys.stderr.isatty() else "auto",
    )
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(result.summary())
        print(f"wrote {', '.join(str(out / f) for f in result.metrics['files'].values())}")
    return 0


def _add_align_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="folder tree <identity>/<image> (or holding lfw/ or lfw.zip), or a zip")
    p.add_argument("dst", metavar="DST", help="output folder: the same tree of aligned crops, align_report.csv, "
                                              "align_config.json; an interrupted run resumes here")
    g = p.add_argument_group("crop")
    g.add_argument("--size", type=int, default=112, help="crop side in pixels: 112 (ArcFace, default), 160, 224, ...")
    g.add_argument("--margin", type=float, default=0.0,
                   help="context added around the ArcFace framing, as a fraction of it per side (default 0)")
    g.add_argument("--format", dest="fmt", choices=("jpg", "png"), default="jpg", help="crop file format (default jpg)")
    g.add_argument("--jpeg-quality", type=int, default=95)
    g = p.add_argument_group("face choice")
    g.add_argument("--pick", choices=("largest", "central"), default="largest",
                   help="several faces: align the largest box or the one nearest the centre (default largest)")
    g.add_argument("--min-confidence", type=float, default=0.9, help="ignore faces scored lower (default 0.9)")
    g.add_argument("--min-face-size", type=float, default=20.0,
                   help="ignore faces whose box is smaller, in original pixels (default 20); "
                        "above 20 detection also runs faster, on a copy shrunk by 20/N")
    g.add_argument("--on-no-face", choices=("skip", "center"), default="skip",
                   help="no face passes: skip the image (recorded) or write a centre crop (default skip)")
    g.add_argument("--center-crop", type=float, default=1.0,
                   help="fraction of the shorter side the centre-crop fallback keeps (default 1.0; ~0.58 for LFW)")
    g = p.add_argument_group("run")
    g.add_argument("--detect-max-side", type=int, default=1024,
                   help="downscale larger images for detection only (the warp reads the original); default 1024")
    g.add_argument("--batch-size", type=int, default=16, help="images per detector call (default 16)")
    g.add_argument("--limit", type=int, help="align only the first N images (sorted)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--grid", metavar="PNG", help="also draw N originals and their crops into this PNG")
    g.add_argument("--grid-n", type=int, default=8, help="faces in the --grid picture (default 8)")


def _cmd_align(args) -> int:
    from kerasface.data.align import AlignOptions
    from kerasface.data.align_run import align_tree

    opts = AlignOptions(size=args.size, margin=args.margin, pick=args.pick, min_confidence=args.min_confidence,
                        min_face_size=args.min_face_size, on_no_face=args.on_no_face,
                        center_crop=args.center_crop, detect_max_side=args.detect_max_side)
    try:
        summary = align_tree(args.src, args.dst, opts, batch_size=args.batch_size, fmt=args.fmt,
                             jpeg_quality=args.jpeg_quality, limit=args.limit, progress=not args.quiet)
    except KeyboardInterrupt:
        print("\nkerasface align: interrupted; the crops and report rows written so far are complete, "
              "run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.format())
    if args.grid:
        from kerasface.data.align_run import save_alignment_grid

        shown = save_alignment_grid(args.src, args.dst, args.grid, n=args.grid_n,
                                    title=f"originals (MTCNN box, landmarks) and {args.size}x{args.size} aligned crops")
        print(f"wrote {args.grid} ({len(shown)} faces)")
    return 0


def _route_train(argv: list[str]) -> list[str]:
    """``train --preset NAME``: a triplet or classification preset goes to its own command
    (``train-triplet`` / ``train-classify``), so ``kerasface train --preset NAME --data DIR`` runs any preset."""
    if not argv or argv[0] != "train":
        return argv
    name = None
    for i, a in enumerate(argv):
        if a == "--preset" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--preset="):
            name = a.split("=", 1)[1]
    if name is None:
        return argv
    from kerasface.presets import CLASSIFY_PRESETS, TRIPLET_PRESETS

    if name in CLASSIFY_PRESETS:
        return ["train-classify", *argv[1:]]
    if name in TRIPLET_PRESETS:
        return ["train-triplet", *argv[1:]]
    return argv


def _cmd_pack(args) -> int:
    from kerasface.cli_pack import cmd_pack

    return cmd_pack(args)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_route_train(argv))
    _quiet_tf()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    handlers = {"train": _cmd_train, "presets": _cmd_presets, "summary": _cmd_summary,
                "lowlight-grid": _cmd_lowlight_grid, "align": _cmd_align, "evaluate": _cmd_evaluate,
                "train-triplet": _cmd_train_triplet, "train-classify": _cmd_train_classify, "pack": _cmd_pack}
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"kerasface {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # a NaN/inf loss stopped training; the run folder keeps the last good epoch
        print(f"kerasface {args.command}: error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
