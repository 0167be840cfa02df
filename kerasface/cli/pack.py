"""``kerasface pack SRC OUT --shards N``: images (aligned crops or raw) into TFRecord shards + ``index.json``.

The work is :func:`kerasface.data.tfrecord.pack` (resumable, atomic per shard);
the shards are read back with :func:`kerasface.data.tfrecord.read_shards`.
"""

from __future__ import annotations

import argparse
import sys

from kerasface.cli import exit_codes
from kerasface.cli.flags import ranged

__all__ = ["HELP", "add_arguments", "run"]

HELP = "images (aligned crops or raw) into TFRecord shards with labels and an identity index; resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="folder tree <identity>/<image> (e.g. the output of `kerasface align`), "
                                              "a folder holding lfw/ or lfw.zip, a zip, or a path,label file list")
    p.add_argument("out", metavar="OUT", help="output folder: shard-NNNNN-of-NNNNN.tfrecord, index.json, "
                                              "pack_config.json; an interrupted run resumes here")
    p.add_argument("--shards", type=ranged("shards"), default=8,
                   help="number of shard files (default 8; at least the number of multiworker workers)")
    p.add_argument("--image-size", type=ranged("image_size"),
                   help="re-encode the centre crop at this side (e.g. 112); default: keep each file's bytes as "
                        "they are")
    p.add_argument("--center-crop", type=ranged("center_crop", float), default=1.0,
                   help="with --image-size: fraction of the shorter side kept before resizing (default 1.0)")
    p.add_argument("--format", dest="fmt", choices=("jpg", "png"), default="jpg",
                   help="with --image-size: JPEG (default) or lossless PNG")
    p.add_argument("--jpeg-quality", type=ranged("jpeg_quality"), default=95,
                   help="with --format jpg: JPEG quality (default 95)")
    p.add_argument("--min-images", type=ranged("min_images"), default=1,
                   help="leave out identities with fewer images (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the order in which images are spread over the shards")
    p.add_argument("--workers", type=ranged("workers"), help="decoding threads (default: the CPU count, at most 8)")
    p.add_argument("--limit", type=ranged("limit"), help="pack only the first N images (name order)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # here, not at the top: TFRecord writing imports TensorFlow
    from kerasface.data.tfrecord import pack

    try:
        summary = pack(args.src, args.out, shards=args.shards, image_size=args.image_size,
                       center_crop=args.center_crop, fmt=args.fmt, jpeg_quality=args.jpeg_quality, seed=args.seed,
                       min_images=args.min_images, workers=args.workers, progress=not args.quiet, limit=args.limit)
    except KeyboardInterrupt:
        print("\nkerasface pack: interrupted; finished shards are complete, run the same command again to resume",
              file=sys.stderr)
        return exit_codes.INTERRUPTED
    print(summary.format())
    return 0
