"""``kerasface presets``: every preset with the script that trains it and its description."""

from __future__ import annotations

import argparse

from kerasface.cli.train import KINDS
from kerasface.presets import CLASSIFY_PRESETS, PAIR_PRESETS, TRIPLET_PRESETS

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list the experiment presets (name, training script, description)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No flags."""


def run(args: argparse.Namespace) -> int:
    for kind, presets in (("pairs", PAIR_PRESETS), ("triplet", TRIPLET_PRESETS), ("classify", CLASSIFY_PRESETS)):
        for name, p in presets.items():
            print(f"{name:<28} {KINDS[kind].script:<17} {p.description}")
    return 0
