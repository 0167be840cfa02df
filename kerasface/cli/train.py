"""``kerasface train`` (any preset), ``train-triplet`` and ``train-classify``: flags and command.

The flags of a trainer are generated from its settings schema
(:mod:`kerasface.cli.flags`); ``kerasface train --preset NAME`` gets the flags
of NAME's trainer because :mod:`kerasface.cli.main` reads ``--preset`` first
and builds the parser for that preset's kind. ``python train_pairs.py`` /
``train_triplet.py`` / ``train_classify.py`` are ``kerasface train`` /
``train-triplet`` / ``train-classify``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from kerasface.cli import exit_codes
from kerasface.cli.flags import add_runtime_flags, add_settings_flags, runtime_from_args, settings_overrides
from kerasface.config import ClassifyExperiment, PairExperiment, TripletExperiment
from kerasface.presets import find_preset, get_classify_preset, get_pair_preset, get_triplet_preset

__all__ = ["COMMANDS", "KINDS", "Kind", "add_arguments", "kind_of", "run", "run_name"]


@dataclass(frozen=True)
class Kind:
    """One trainer: its settings schema, preset lookup, default preset, command and script."""

    name: str
    schema: type
    get_preset: object
    default_preset: str
    command: str
    script: str
    what: str


KINDS = {
    "pairs": Kind("pairs", PairExperiment, get_pair_preset, "vargface", "train", "train_pairs.py",
                  "a Siamese pair verifier (report 000)"),
    "triplet": Kind("triplet", TripletExperiment, get_triplet_preset, "facenet-nn2", "train-triplet",
                    "train_triplet.py", "a triplet-loss embedding (FaceNet NN2, report 004)"),
    "classify": Kind("classify", ClassifyExperiment, get_classify_preset, "thinresnet34-amsoftmax", "train-classify",
                     "train_classify.py", "an embedding by classification (AM-softmax, ArcFace, softmax), the "
                                          "angular prototypical loss or distillation (reports 001, 002, 003)"),
}

#: ``{command: help}``; ``train`` takes any preset, the others their trainer's.
COMMANDS = {
    "train": "train any preset (pair, triplet or classification) and write its run folder",
    "train-triplet": f"train {KINDS['triplet'].what} and write its run folder",
    "train-classify": f"train {KINDS['classify'].what} and write its run folder",
}
_COMMAND_KIND = {"train-triplet": "triplet", "train-classify": "classify"}


def kind_of(command: str, preset: str | None) -> Kind:
    """The trainer of ``command`` (``train``: the kind of ``preset``; an unknown or no preset: pairs)."""
    if command in _COMMAND_KIND:
        return KINDS[_COMMAND_KIND[command]]
    try:
        return KINDS[find_preset(preset)[0]] if preset else KINDS["pairs"]
    except ValueError:
        return KINDS["pairs"]  # the command reports the unknown name


def add_arguments(p: argparse.ArgumentParser, command: str = "train", preset: str | None = None) -> None:
    """The flags of ``command`` for ``preset`` (its kind's schema; its values shown in the help)."""
    kind = kind_of(command, preset)
    name = preset or kind.default_preset
    try:
        shown = kind.get_preset(name)
    except ValueError:
        shown = None
    p.description = (f"Train {kind.what}; the flags override the preset's settings (shown: {name}). "
                     + ("`kerasface train --preset NAME --help` lists the flags of NAME's trainer."
                        if command == "train" else ""))
    p.set_defaults(kind=kind.name, label=kind.command)
    p.add_argument("--preset", default=kind.default_preset,
                   help=f"experiment preset (see `kerasface presets`); default: {kind.default_preset}")
    add_settings_flags(p, kind.schema, shown)
    g = p.add_argument_group("run")
    g.add_argument("--run-dir", help="exact run folder to write (default: OUT/PRESET[-BACKBONE]-TIMESTAMP); an "
                                     "unfinished run folder of the same settings is resumed after its last "
                                     "finished epoch")
    g.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    add_runtime_flags(p)


def run_name(preset, cfg) -> str:
    """The run folder's name stem: the preset's name, plus the backbone when a flag changed it."""
    return cfg.name if cfg.backbone == preset.backbone else f"{cfg.name}-{cfg.backbone}"


def _trainer(kind: str):
    # here, not at the top: the trainers import TensorFlow
    from kerasface.training import train_classifier, train_pairs, train_triplet

    return {"pairs": train_pairs, "triplet": train_triplet, "classify": train_classifier}[kind]


def run(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    if args.command == "train":
        find_preset(args.preset)  # an unknown name: the error lists every preset of every trainer
    preset = kind.get_preset(args.preset)
    cfg = preset.override(**settings_overrides(args, kind.schema))
    runtime = runtime_from_args(args)
    runtime.make_strategy()  # multiworker: before TensorFlow runs anything
    print(f"kerasface: preset {cfg.name}: {cfg.description}", flush=True)
    train = _trainer(kind.name)
    kwargs = {"run_dir": args.run_dir, "verbose": 2 if args.quiet else "auto", "runtime": runtime}
    result = train(cfg, run_name=run_name(preset, cfg), **kwargs)
    m = result.metrics
    print(f"\nrun folder: {result.run_dir}")
    {"pairs": _print_pairs, "triplet": _print_triplet, "classify": _print_classify}[kind.name](m)
    if m.get("stopped"):
        print(f"kerasface {kind.command}: stopped: {m['stopped']}", file=sys.stderr)
        # a triplet run stops early on collapsed embeddings or a non-finite loss
        return exit_codes.COLLAPSED if m.get("collapse") else exit_codes.NON_FINITE_LOSS
    return exit_codes.OK


def _print_pairs(m: dict) -> None:
    print(f"validation accuracy: {m['final']['val_accuracy']:.4f} (best {m['best_val_accuracy']:.4f} "
          f"at epoch {m['best_val_accuracy_epoch']}), validation loss: {m['final']['val_loss']:.4f}, "
          f"on {m['val_pairs']} pairs after {m['epochs_run']} epochs")
    for part, r in (m.get("data") or {}).items():
        if r.get("missing") or r.get("corrupt"):
            print(f"{part} pairs skipped: {r.get('missing', 0)} naming missing images, "
                  f"{r.get('corrupt', 0)} touching corrupt images (see data_report.json)")


def _print_triplet(m: dict) -> None:
    f = m["final"]
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


def _print_classify(m: dict) -> None:
    print(f"{m['classes']} training identities, {m['train_images']} training images, {m['epochs_run']} epochs "
          f"({m['seconds_per_epoch']:.1f} s each, {m['train_images_per_second']:.1f} images/s)")
    if "best_val_accuracy" in m:
        print(f"held-out classification accuracy: {m['final']['val_accuracy']:.4f} (best {m['best_val_accuracy']:.4f} "
              f"at epoch {m['best_val_accuracy_epoch']}) on {m['heldout_images']} images")
    v = m.get("verification")
    if v:
        held = (f", held-out thresholds {v['heldout_accuracy_mean']:.4f} +- {v['heldout_accuracy_std']:.4f}"
                if "heldout_accuracy_mean" in v else "")
        print(f"verification on {v['pairs_accounting']['evaluated']} pairs: "
              f"accuracy {v['best_threshold_accuracy']:.4f} at the best threshold{held}, AUC {v['auc']:.4f}, "
              f"EER {v['eer_percent']:.2f} %")
