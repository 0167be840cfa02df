"""``kerasface train-classify`` (also ``kerasface train --preset <a classification preset>``): flags and command.

Reports 001 and 003: ThinResNet / ResNet34 trained with a margin softmax head
(AM-softmax, ArcFace, plain softmax) or fine-tuned with the angular
prototypical loss (``--init-from`` a pretraining run folder).
"""

from __future__ import annotations

import argparse

__all__ = ["add_train_classify_args", "cmd_train_classify"]


def add_train_classify_args(p: argparse.ArgumentParser) -> None:
    from kerasface.cli_triplet import parse_folds
    from kerasface.data.augment import AUGMENTATIONS
    from kerasface.config import CLASSIFY_HEADS, CLASSIFY_OBJECTIVES

    p.add_argument("--preset", default="thinresnet34-amsoftmax",
                   help="classification preset (see `kerasface presets`); default: thinresnet34-amsoftmax")
    g = p.add_argument_group("data (training identities never include the people of the evaluation pairs)")
    g.add_argument("--data", help="folder of <identity>/<image> (LFW folder or zip, any such tree) or a path,label "
                                  "file list (default: the bundled sample data/lfw_sample)")
    g.add_argument("--pairs", help="folds list (default: pairs.txt next to --data when present)")
    g.add_argument("--holdout-folds", type=parse_folds, metavar="FOLDS",
                   help="folds whose pairs give the EER/accuracy and whose people never train (default 10)")
    g.add_argument("--train-folds", type=parse_folds, metavar="FOLDS",
                   help="train only on the people of these folds (e.g. 1-9; default: everyone else)")
    g.add_argument("--eval-pairs", help="evaluate on this pairs list instead (its people are left out of training)")
    g.add_argument("--min-images", type=int, help="training identities need at least this many images")
    g.add_argument("--val-fraction", type=float,
                   help="held-out images of each training identity for classification accuracy (default 0.1)")
    g.add_argument("--val-min-images", type=int, help="only identities with this many images give held-out images")
    g.add_argument("--image-size", type=int, help="input side (report 001: 224)")
    g.add_argument("--center-crop", type=float, help="fraction of the image kept before resizing (1.0 = whole)")
    g.add_argument("--augment", choices=AUGMENTATIONS, help="augmentation policy (docs/augmentation.md)")
    g.add_argument("--max-per-identity", type=int, help="margin objectives: images of one identity per epoch (report 001: 200)")
    g.add_argument("--cache-mb", type=int, help="decode all faces into memory when they fit in this many MB (default 2048)")
    g.add_argument("--on-corrupt", dest="on_error", choices=("skip", "error"),
                   help="an undecodable image: skip it (counted) or stop")
    g = p.add_argument_group("model and objective")
    g.add_argument("--backbone", help="backbone name (see `kerasface summary --list`)")
    g.add_argument("--bn-momentum", type=float,
                   help="BatchNormalization momentum of the backbone (default: the builder's; 0.99 or lower "
                        "for runs of a few hundred steps)")
    g.add_argument("--objective", choices=CLASSIFY_OBJECTIVES)
    g.add_argument("--head", choices=CLASSIFY_HEADS, help="margin head kind")
    g.add_argument("--scale", type=float, help="margin head scale s")
    g.add_argument("--margin", type=float, help="margin m")
    g.add_argument("--easy-margin", dest="easy_margin", action="store_true", default=None, help="ArcFace easy margin")
    g.add_argument("--m-images", type=int, help="angproto: M images per identity in a batch")
    g.add_argument("--init-from", metavar="RUN_DIR",
                   help="start the backbone from this run folder's model.keras (or a .keras file)")
    g = p.add_argument_group("report 002 terms (objective report002; a weight of 0 turns a term off)")
    g.add_argument("--teacher", metavar="RUN_DIR", help="teacher run folder (its classifier.keras), frozen")
    g.add_argument("--ce-weight", type=float, help="cross entropy with the labels")
    g.add_argument("--center-loss", dest="center_weight", type=float, help="centre loss weight")
    g.add_argument("--center-alpha", type=float, help="centre update rate")
    g.add_argument("--prelogit-norm", dest="prelogit_norm_weight", type=float, help="pre-logit norm loss weight")
    g.add_argument("--triplet", dest="triplet_weight", type=float,
                   help="batch-hard triplet weight (> 0: N identities x --m-images batches)")
    g.add_argument("--triplet-margin", type=float)
    g.add_argument("--hard-mining", dest="hard_mining_fraction", type=float,
                   help="hard instance mining: keep this hardest fraction of each batch (1 = off)")
    g.add_argument("--embedding-l2", dest="embedding_l2_weight", type=float, help="T-S: student-teacher embedding L2")
    g.add_argument("--soft-ce", dest="soft_ce_weight", type=float, help="T-S: soft cross entropy at --temperature")
    g.add_argument("--hard-ce", dest="hard_ce_weight", type=float, help="T-S: cross entropy with the teacher's argmax")
    g.add_argument("--temperature", type=float)
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("adam", "adamw"))
    g.add_argument("--learning-rate", type=float)
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument("--schedule", choices=("constant", "cosine_restarts"))
    g.add_argument("--cycle-epochs", type=float, help="cosine_restarts: first cycle in epochs")
    g.add_argument("--min-lr", type=float, help="cosine_restarts: minimum learning rate")
    g.add_argument("--freeze-first", type=int, help="freeze the first N backbone layers for the whole run")
    g.add_argument("--unfreeze-every", type=int,
                   help="start with the head and the top stage trainable; unfreeze the next stage every N epochs")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--verify-every", type=int, help="EER/accuracy on the evaluation pairs every N epochs (0: at the end)")
    g = p.add_argument_group("output")
    g.add_argument("--out", help="parent folder of run folders (default: runs)")
    g.add_argument("--run-dir", help="exact run folder (an unfinished one of the same settings is resumed)")
    g.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    from kerasface.training.distribute import add_runtime_args

    add_runtime_args(p)  # --strategy, --mixed-precision, --jit-compile


def cmd_train_classify(args) -> int:
    import dataclasses

    from kerasface.config import ClassifyExperiment

    from kerasface.presets import get_classify_preset
    from kerasface.training.classify import train_classifier
    from kerasface.training.distribute import runtime_from_args

    runtime = runtime_from_args(args)
    runtime.make_strategy()  # multiworker: before TensorFlow runs anything

    # every preset field that has a flag of the same name (flags left out are None: the preset's value stays)
    fields = [f.name for f in dataclasses.fields(ClassifyExperiment) if f.name not in ("name", "description")]
    cfg = get_classify_preset(args.preset).override(**{f: getattr(args, f) for f in fields if hasattr(args, f)})
    print(f"kerasface: preset {cfg.name}: {cfg.description}", flush=True)
    result = train_classifier(cfg, run_dir=args.run_dir, verbose=2 if args.quiet else "auto", runtime=runtime)
    m = result.metrics
    print(f"\nrun folder: {result.run_dir}")
    print(f"{m['classes']} training identities, {m['train_images']} training images, {m['epochs_run']} epochs "
          f"({m['seconds_per_epoch']:.1f} s each, {m['train_images_per_second']:.1f} images/s)")
    if "best_val_accuracy" in m:
        print(f"held-out classification accuracy: {m['final']['val_accuracy']:.4f} (best {m['best_val_accuracy']:.4f} "
              f"at epoch {m['best_val_accuracy_epoch']}) on {m['heldout_images']} images")
    v = m.get("verification")
    if v:
        held = (f", held-out thresholds {v['heldout_accuracy_mean']:.4f} +- {v['heldout_accuracy_std']:.4f}"
                if "heldout_accuracy_mean" in v else "")
        print(f"verification on {v['pairs_accounting']['evaluated']} pairs: accuracy {v['best_threshold_accuracy']:.4f} "
              f"at the best threshold{held}, AUC {v['auc']:.4f}, EER {v['eer_percent']:.2f} %")
    return 0
