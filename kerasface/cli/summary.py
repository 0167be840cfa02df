"""``kerasface summary NAME``: parameters, MACs and activation memory of a backbone."""

from __future__ import annotations

import argparse
import json

__all__ = ["HELP", "add_arguments", "run"]

HELP = "params, MACs and activation memory of a backbone"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="backbone name (without one: the list of names)")
    p.add_argument("--list", action="store_true", help="list the backbone names")
    p.add_argument("--input-size", type=int, help="input side (default: the backbone's own, e.g. 112 or 224)")
    p.add_argument("--per-layer", action="store_true", help="one line per layer")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    # here, not at the top: the models import Keras
    from kerasface.models import build_backbone, format_profile, list_backbones, profile_model

    if args.list or not args.name:
        print("\n".join(list_backbones()))
        return 0
    kwargs = {"input_shape": (args.input_size, args.input_size, 3)} if args.input_size else {}
    prof = profile_model(build_backbone(args.name, **kwargs))
    print(json.dumps(prof.as_dict(), indent=2) if args.json else format_profile(prof, per_layer=args.per_layer))
    return 0
