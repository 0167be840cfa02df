"""``kerasface align SRC DST``: detect (MTCNN) and align the faces of a folder tree or zip; resumable."""

from __future__ import annotations

import argparse
import sys

from kerasface.cli import exit_codes
from kerasface.cli.flags import ranged

__all__ = ["HELP", "add_arguments", "run"]

HELP = "detect (MTCNN) and align the faces of a folder tree or zip; resumable, with a CSV report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="folder tree <identity>/<image> (or holding lfw/ or lfw.zip), or a zip")
    p.add_argument("dst", metavar="DST", help="output folder: the same tree of aligned crops, align_report.csv, "
                                              "align_config.json; an interrupted run resumes here")
    g = p.add_argument_group("crop")
    g.add_argument("--size", type=int, default=112, help="crop side in pixels: 112 (ArcFace, default), 160, 224, ...")
    g.add_argument("--margin", type=float, default=0.0,
                   help="context added around the ArcFace framing, as a fraction of it per side (default 0)")
    g.add_argument("--template", choices=("arcface", "dlib"), default="arcface",
                   help="where the eyes, nose and mouth go: arcface (default) or dlib (dlib's face chips, "
                        "for the dlib-resnet-v1 pretrained model: --template dlib --size 150)")
    g.add_argument("--format", dest="fmt", choices=("jpg", "png"), default="jpg", help="crop file format (default jpg)")
    g.add_argument("--jpeg-quality", type=ranged("jpeg_quality"), default=95,
                   help="JPEG quality of the crops (default 95)")
    g = p.add_argument_group("face choice")
    g.add_argument("--pick", choices=("largest", "central"), default="largest",
                   help="several faces: align the largest box or the one nearest the centre (default largest)")
    g.add_argument("--min-confidence", type=ranged("min_confidence", float), default=0.9,
                   help="ignore faces scored lower (default 0.9)")
    g.add_argument("--min-face-size", type=float, default=20.0,
                   help="ignore faces whose box is smaller, in original pixels (default 20); "
                        "above 20 detection also runs faster, on a copy shrunk by 20/N")
    g.add_argument("--on-no-face", choices=("skip", "center"), default="skip",
                   help="no face passes: skip the image (recorded) or write a centre crop (default skip)")
    g.add_argument("--center-crop", type=ranged("center_crop", float), default=1.0,
                   help="fraction of the shorter side the centre-crop fallback keeps (default 1.0; ~0.58 for LFW)")
    g = p.add_argument_group("run")
    g.add_argument("--detect-max-side", type=int, default=1024,
                   help="downscale larger images for detection only (the warp reads the original); default 1024")
    g.add_argument("--batch-size", type=ranged("batch_size"), default=16, help="images per detector call (default 16)")
    g.add_argument("--limit", type=ranged("limit"), help="align only the first N images (sorted)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--landmarks-from", metavar="REPORT",
                   help="reuse the faces an earlier align run recorded (its align_report.csv or its DST folder) "
                        "instead of detecting: other sizes or templates from the same detections, no MTCNN")
    g.add_argument("--grid", metavar="PNG", help="also draw N originals and their crops into this PNG")
    g.add_argument("--grid-n", type=ranged("grid_n"), default=8, help="faces in the --grid picture (default 8)")


def run(args: argparse.Namespace) -> int:
    # here, not at the top: alignment imports OpenCV and the MTCNN detector (TensorFlow)
    from kerasface.data.align import AlignOptions
    from kerasface.data.align_run import align_tree, save_alignment_grid

    opts = AlignOptions(size=args.size, margin=args.margin, template=args.template, pick=args.pick,
                        min_confidence=args.min_confidence,
                        min_face_size=args.min_face_size, on_no_face=args.on_no_face,
                        center_crop=args.center_crop, detect_max_side=args.detect_max_side)
    try:
        summary = align_tree(args.src, args.dst, opts, batch_size=args.batch_size, fmt=args.fmt,
                             jpeg_quality=args.jpeg_quality, limit=args.limit, progress=not args.quiet,
                             landmarks_from=args.landmarks_from)
    except KeyboardInterrupt:
        print("\nkerasface align: interrupted; the crops and report rows written so far are complete, "
              "run the same command again to resume", file=sys.stderr)
        return exit_codes.INTERRUPTED
    print(summary.format())
    if args.grid:
        shown = save_alignment_grid(args.src, args.dst, args.grid, n=args.grid_n,
                                    title=f"originals (MTCNN box, landmarks) and {args.size}x{args.size} aligned crops")
        print(f"wrote {args.grid} ({len(shown)} faces)")
    return 0
