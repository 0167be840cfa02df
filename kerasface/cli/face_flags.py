"""The flags ``verify``, ``embed`` and ``find`` share: the model, and how a face is chosen in a photo."""

from __future__ import annotations

import argparse

from kerasface.cli.flags import ranged
from kerasface.face_spec import DEFAULT_MODEL  # plain Python: the CLI stays light

__all__ = ["DEFAULT_MODEL", "add_face_choice", "add_model"]


def add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="NAME|PATH",
                   help=f"a pretrained model's name (default {DEFAULT_MODEL}), a saved .keras embedding model, "
                        f"or a training run folder; its face spec (crop, alignment, scaling, metric, threshold) "
                        f"says how faces are prepared")


def add_face_choice(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("face choice (models that detect faces)")
    g.add_argument("--pick", choices=("largest", "central", "only"), default="largest",
                   help="several faces in a photo: use the largest box or the one nearest the centre (as "
                        "`kerasface align --pick`), or 'only': several faces are an error (default largest)")
    g.add_argument("--min-confidence", type=ranged("min_confidence", float), default=0.9,
                   help="ignore faces the detector scores lower (default 0.9)")
