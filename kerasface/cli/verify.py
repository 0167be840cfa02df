"""``kerasface verify A B``: are the faces of two photos the same person? Exit 0 same, 1 different, 2 bad input."""

from __future__ import annotations

import argparse
import json

from kerasface.cli import exit_codes
from kerasface.cli.face_flags import add_face_choice, add_model

__all__ = ["HELP", "add_arguments", "run"]

HELP = ("are the faces of two photos the same person? (exit status 0 same, 1 different, 2 bad input)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("img1", metavar="A", help="first photo")
    p.add_argument("img2", metavar="B", help="second photo")
    add_model(p)
    p.add_argument("--threshold", type=float,
                   help="decision threshold in the model's metric (cosine similarity: same when >=; l2 distance: "
                        "same when <=); default: the one shipped with the model")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_face_choice(p)


def format_result(r: dict) -> str:
    """One line: the verdict, the score against the threshold, and where the threshold came from."""
    verdict = "same person" if r["same"] else "different people"
    op = (">=" if r["same"] else "<") if r["metric"] == "cosine" else ("<=" if r["same"] else ">")
    return (f"{verdict}: {r['metric']} {r['score']:.4f} {op} threshold {r['threshold']:.4f} "
            f"(threshold: {r['threshold_source']}; model {r['model']})")


def run(args: argparse.Namespace) -> int:
    # here, not at the top: recognition imports Keras, TensorFlow and OpenCV
    from kerasface.recognition.api import verify

    r = verify(args.img1, args.img2, args.model, threshold=args.threshold, pick=args.pick,
               min_confidence=args.min_confidence)
    print(json.dumps(r, indent=2) if args.json else format_result(r))
    return exit_codes.OK if r["same"] else exit_codes.DIFFERENT_PEOPLE
