"""``kerasface evaluate MODEL``: verification metrics of a saved model on a pairs list."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kerasface.cli.flags import DeprecatedSpelling, ranged
from kerasface.data.locations import bundled_sample_dir

__all__ = ["HELP", "add_arguments", "run"]

HELP = "verification metrics of a saved model on a pairs list (10-fold, ROC, EER, TAR@FAR)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="saved .keras model (embedding model, Siamese verifier or triplet graph), "
                                 "a training run folder, a pretrained model name (dlib-resnet-v1), "
                                 "or 'raw-pixels' for the non-learned baseline")
    p.add_argument("--data", help="LFW folder or zip, or the root of a pairs CSV's paths (default: the bundled "
                                  "sample data/lfw_sample; for a pairs CSV, the CSV's folder)")
    p.add_argument("--eval-pairs", "--pairs", dest="pairs", action=DeprecatedSpelling, aliases=("--pairs",),
                   help="evaluation pairs: an LFW list, or a CSV of img1,img2,label[,fold] rows (optional header; "
                        "label 1/0, same/different or true/false; paths relative to the CSV's folder, or to "
                        "--data when given). A name not found as given is looked for next to --data. "
                        "Default: pairs.txt, else pairsDevTest.txt, else pairsVal.txt next to --data")
    p.add_argument("--scores", metavar="CSV",
                   help="also write every evaluated pair's score to this CSV: img1,img2,label,score "
                        "(and fold with several folds; for --metric l2/l2sq the score is the distance)")
    p.add_argument("--metric", choices=("cosine", "l2", "l2sq"), default="cosine",
                   help="pair score of embedding models (default: cosine)")
    p.add_argument("--flip", action="store_true",
                   help="flip TTA: sum the embeddings of each face and its mirror, then L2-normalise")
    p.add_argument("--image-size", type=ranged("image_size"), help="input side (default: the model's; raw-pixels: 64)")
    p.add_argument("--center-crop", type=ranged("center_crop", float), default=1.0,
                   help="fraction of the image kept before resizing (default 1.0: whole image)")
    p.add_argument("--normalization", choices=("kerasface", "unit", "raw"), default=None,
                   help="pixel scaling the model expects: kerasface (x-127.5)/128, unit x/255, raw 0..255 "
                        "(default: raw for a model that scales its own input, such as the pretrained ones, "
                        "else kerasface)")
    p.add_argument("--low-light-seed", type=int,
                   help="darken every face with the report-000 low-light transform of this seed "
                        "(the vargface-lowlight presets use 1234)")
    p.add_argument("--backbone-only", action="store_true",
                   help="Siamese verifier or triplet graph: score pairs with its shared embedding model "
                        "(--metric) instead of the verifier's 'same' probability")
    p.add_argument("--batch-size", type=ranged("batch_size"), default=64, help="faces per inference batch (default 64)")
    p.add_argument("--on-missing", choices=("skip", "error"), default="skip",
                   help="pairs naming a missing image: leave them out (counted, listed) or stop")
    p.add_argument("--cases", type=ranged("cases"), default=6,
                   help="hardest pairs of each kind drawn in cases.png (0: none)")
    p.add_argument("--out", help="folder for metrics.json, roc.png, cases.png "
                                 "(default: next to the model, eval-<pairs name>)")
    p.add_argument("--json", action="store_true", help="print metrics.json instead of the table")


def run(args: argparse.Namespace) -> int:
    from kerasface.data.pair_csv import is_pairs_csv, read_pairs_list
    from kerasface.data.splits import find_pairs_list  # NumPy: not needed to build the parser

    data = Path(args.data) if args.data else None
    if data is not None and not data.exists():
        raise FileNotFoundError(f"--data not found: {str(data)!r}")
    if args.scores and Path(args.scores).is_dir():  # said before the evaluation, not after it
        raise IsADirectoryError(f"--scores {args.scores!r} is a folder; give the CSV file to write")
    pairs = None
    if args.pairs:  # as given, else next to the data (as train looks for its lists)
        near = data if data is not None else _bundled_sample()
        pairs = find_pairs_list(near or Path.cwd(), args.pairs, what="--eval-pairs")
        if pairs != Path(args.pairs):
            print(f"kerasface evaluate: --eval-pairs {args.pairs} is not in the working folder; using {pairs} "
                  f"(next to {'--data' if args.data else 'the bundled sample'})", flush=True)
    # here, not at the top: these import Keras and TensorFlow
    from kerasface.evaluation.baselines import BASELINES
    from kerasface.evaluation.embeddings import embedding_submodel
    from kerasface.evaluation.verification import default_pairs_file, evaluate_to_dir
    from kerasface.io import load_model
    from kerasface.pretrained import NAMES, face_spec, resolve

    if pairs is None:
        data = data or bundled_sample_dir()
        pairs = default_pairs_file(data)
    is_csv = is_pairs_csv(pairs)  # the list's format, decided here once; the pairs go down as a list
    if data is None:  # a pairs CSV's paths are relative to its folder; LFW lists read the bundled sample
        data = pairs.parent if is_csv else bundled_sample_dir()
    pair_list = read_pairs_list(pairs, is_csv=is_csv)
    normalization = args.normalization
    if args.model in BASELINES:
        model = BASELINES[args.model](args.image_size or 64)
        default_out = Path("runs") / f"{args.model}-eval-{pairs.stem}"
    elif args.model in NAMES or Path(args.model).is_dir():
        model = resolve(args.model)  # a pretrained name (built into the user cache) or a run folder
        name = args.model if args.model in NAMES else Path(args.model).name
        default_out = Path("runs") / f"{name}-eval-{pairs.stem}"
    else:
        path = Path(args.model)
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {str(path)!r} (a .keras file, or one of {sorted(BASELINES)})")
        model = load_model(path)  # `import kerasface` registered its layers; errors name the file
        default_out = path.parent / f"eval-{pairs.stem}"
        if args.backbone_only:
            model = embedding_submodel(model)
            default_out = path.parent / f"eval-{pairs.stem}-backbone"
    if normalization is None:  # a model whose first layer scales 0..255 pixels itself takes them raw
        spec = face_spec(model) if hasattr(model, "layers") else None
        normalization = "raw" if spec is not None and spec.input_scaling == "in-model" else "kerasface"
    out = Path(args.out) if args.out else default_out
    print(f"kerasface evaluate: {args.model} on {pairs} (images from {data})", flush=True)
    result = evaluate_to_dir(
        model, data, pair_list, out, n_cases=args.cases, title=Path(args.model).name,
        metric=args.metric, flip=args.flip, image_size=args.image_size, center_crop=args.center_crop,
        normalization=normalization, low_light_seed=args.low_light_seed,
        batch_size=args.batch_size, on_missing=args.on_missing, scores=args.scores,
        verbose=2 if not sys.stderr.isatty() else "auto",
    )
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(result.summary())
        written = [str(out / f) for f in result.metrics["files"].values()]
        print(f"wrote {', '.join(written + ([args.scores] if args.scores else []))}")
    return 0


def _bundled_sample() -> Path | None:
    try:
        return bundled_sample_dir()
    except FileNotFoundError:
        return None
