"""``kerasface embed SRC --out embeddings.npz|.csv``: the face embeddings of every photo under a folder; resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kerasface.cli import exit_codes
from kerasface.cli.face_flags import add_face_choice, add_model
from kerasface.cli.flags import ranged

__all__ = ["HELP", "add_arguments", "run"]

HELP = "face embeddings of every photo under a folder (any layout) into an .npz or .csv; resumable"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="a folder of photos, any layout (walked recursively; the keys are "
                                              "the paths relative to SRC)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="embeddings.npz (keeps the model's record: `kerasface find --gallery` reads it) or .csv "
                        "(path, face, confidence, box, landmarks, embedding); written when all photos are done")
    add_model(p)
    p.add_argument("--all-faces", action="store_true",
                   help="every face of a photo that passes the detector's filters (default: one, see --pick)")
    p.add_argument("--every", type=ranged("every"), default=200,
                   help="save the photos done so far every N photos (default 200): a killed run resumes there")
    p.add_argument("--batch-size", type=ranged("batch_size"), default=16,
                   help="photos per detector and model call (default 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_face_choice(p)


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() not in (".npz", ".csv"):
        raise ValueError(f"--out {args.out}: the output must end in .npz or .csv")
    src = Path(args.src).expanduser()
    if not src.is_dir():
        raise FileNotFoundError(f"SRC not found: {args.src!r} (a folder of photos, any layout)")
    if out.exists() and out.is_dir():
        raise ValueError(f"--out {args.out}: is a folder")
    if not out.parent.exists() or not out.parent.is_dir():
        raise FileNotFoundError(f"--out {args.out}: its folder does not exist")

    # here, not at the top: recognition imports Keras, TensorFlow and OpenCV
    from kerasface.recognition.gallery import checkpoint_path, embed_tree, skipped_summary
    from kerasface.recognition.loading import load_face_model

    model = load_face_model(args.model)
    partial = checkpoint_path(out)
    resumed = partial.is_file()
    try:
        gallery = embed_tree(src, model, all_faces=args.all_faces, pick=args.pick, min_confidence=args.min_confidence,
                             checkpoint=partial, every=args.every, batch_size=args.batch_size,
                             progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\nkerasface embed: interrupted; the photos done so far are in {partial}, "
              f"run the same command again to resume", file=sys.stderr)
        return exit_codes.INTERRUPTED
    n_photos = len(set(gallery.paths))
    if n_photos == 0:
        partial.unlink(missing_ok=True)
        detail = skipped_summary(gallery)
        raise ValueError(f"SRC {args.src}: no face embedded{'; ' + detail if detail else ' (no image files)'}; "
                         f"nothing written")
    gallery.save(out)
    partial.unlink(missing_ok=True)
    print(f"{len(gallery)} face(s) of {n_photos} photo(s) under {args.src} -> {out} (model {model.name}, "
          f"{gallery.dim}-d){' (resumed)' if resumed else ''}")
    detail = skipped_summary(gallery)
    if detail:
        print(detail)
    return exit_codes.OK
