"""``kerasface find IMG --gallery DIR|embeddings.npz``: the gallery faces most like the face of a photo."""

from __future__ import annotations

import argparse
import json

from kerasface.cli.face_flags import add_face_choice, add_model
from kerasface.cli.flags import ranged

__all__ = ["HELP", "add_arguments", "run"]

HELP = "the gallery faces (a folder of photos, or `kerasface embed`'s .npz) most like the face of a photo"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("img", metavar="IMG", help="the photo to look for")
    p.add_argument("--gallery", required=True, metavar="DIR|NPZ",
                   help="a folder of photos (any layout; embedded now) or an embeddings .npz written by "
                        "`kerasface embed` (then --model defaults to the model that wrote it)")
    p.add_argument("--top", type=ranged("top"), default=5, help="matches to list (default 5)")
    add_model(p)
    p.add_argument("--json", action="store_true", help="print the matches as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar while a gallery folder is embedded")
    add_face_choice(p)


def format_matches(matches: list[dict]) -> str:
    lines = []
    for m in matches:
        face = f" (face {m['face']})" if m["face"] else ""
        verdict = "" if m["same"] is None else ("  same person" if m["same"] else "  different")
        lines.append(f"{m['rank']:>3}. {m['path']}{face}  {m['metric']} {m['score']:.4f}  "
                     f"distance {m['distance']:.4f}{verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: recognition imports Keras, TensorFlow and OpenCV
    from kerasface.recognition.api import find

    matches = find(args.img, args.gallery, args.model, top=args.top, pick=args.pick,
                   min_confidence=args.min_confidence, progress=not args.quiet)
    print(json.dumps(matches, indent=2) if args.json else format_matches(matches))
    return 0
