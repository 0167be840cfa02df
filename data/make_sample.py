#!/usr/bin/env python
"""Build the bundled LFW sample ``data/lfw_sample`` from a complete LFW copy.

    python data/make_sample.py --lfw /work/shared/data/lfw

``--lfw`` is a folder holding ``pairsDevTrain.txt`` and ``pairsDevTest.txt``
plus the images (``lfw.zip``, an ``lfw/`` folder, or ``<Name>/`` folders);
``--images`` may point elsewhere for the images.  Writes

* ``lfw_sample/pairsTrain.txt``: the first ``--train`` matched and the first
  ``--train`` mismatched lines of ``pairsDevTrain.txt`` (header ``N``);
* ``lfw_sample/pairsVal.txt``: the same with ``--val`` lines of ``pairsDevTest.txt``;
* ``lfw_sample/lfw/<Name>/<Name>_NNNN.jpg``: every image these pairs use, with
  its original bytes.

If the result would exceed ``--max-bytes``, both counts are reduced by the same
factor (largest train count that fits, val = train * val/train ratio) and a
message says so.  Deterministic and rerunnable: stale files under
``lfw_sample/lfw`` are removed.  Uses the standard library and kerasface only.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    from kerasface.data.lfw import Pair, parse_pairs
    from kerasface.data.sources import open_image_source
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(HERE.parent))
    from kerasface.data.lfw import Pair, parse_pairs
    from kerasface.data.sources import open_image_source


def head_pairs(pairs: list[Pair], n: int) -> list[Pair]:
    """The first ``n`` matched then the first ``n`` mismatched pairs, in file order."""
    return [p for p in pairs if p.same][:n] + [p for p in pairs if not p.same][:n]


def format_pairs(pairs: list[Pair], n: int) -> str:
    """Pairs list text in the official View 1 layout (header ``n``)."""
    lines = [str(n)]
    for p in pairs:
        if p.same:
            lines.append(f"{p.name1}\t{p.idx1}\t{p.idx2}")
        else:
            lines.append(f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}")
    return "\n".join(lines) + "\n"


def plan(train_all, val_all, n_train, n_val, size_of):
    """Selected pairs, list texts, image relpaths and total bytes for the given counts."""
    train, val = head_pairs(train_all, n_train), head_pairs(val_all, n_val)
    texts = {"pairsTrain.txt": format_pairs(train, n_train), "pairsVal.txt": format_pairs(val, n_val)}
    rels = sorted({r for p in train + val for r in (p.path1, p.path2)})
    total = sum(size_of(r) for r in rels) + sum(len(t.encode()) for t in texts.values())
    return texts, rels, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", default="/work/shared/data/lfw", help="folder with the pairs lists (and the images)")
    ap.add_argument("--images", default=None, help="image source if not --lfw (folder or .zip)")
    ap.add_argument("--out", default=str(HERE / "lfw_sample"), help="output folder (default: data/lfw_sample)")
    ap.add_argument("--train", type=int, default=150, help="matched (= mismatched) pairs from pairsDevTrain.txt")
    ap.add_argument("--val", type=int, default=50, help="matched (= mismatched) pairs from pairsDevTest.txt")
    ap.add_argument("--max-bytes", type=int, default=5_900_000, help="size budget of the output folder")
    args = ap.parse_args(argv)

    lfw = Path(args.lfw)
    src = open_image_source(args.images or lfw)
    train_all = parse_pairs(lfw / "pairsDevTrain.txt")
    val_all = parse_pairs(lfw / "pairsDevTest.txt")

    sizes: dict[str, int] = {}

    def size_of(rel: str) -> int:
        if rel not in sizes:
            sizes[rel] = len(src.read_bytes(rel))
        return sizes[rel]

    n_train, n_val = args.train, args.val
    texts, rels, total = plan(train_all, val_all, n_train, n_val, size_of)
    if total > args.max_bytes:
        full = (n_train, n_val, total)
        ratio = args.val / args.train
        for k in range(args.train - 1, 0, -1):
            n_train, n_val = k, max(1, round(k * ratio))
            texts, rels, total = plan(train_all, val_all, n_train, n_val, size_of)
            if total <= args.max_bytes:
                break
        print(f"note: {full[0]}+{full[0]} train / {full[1]}+{full[1]} val pairs would take {full[2]:,} bytes > "
              f"{args.max_bytes:,}; reduced proportionally to {n_train}+{n_train} / {n_val}+{n_val}")

    out = Path(args.out)
    img_root = out / "lfw"
    img_root.mkdir(parents=True, exist_ok=True)
    wanted = set(rels)
    for f in sorted(img_root.glob("*/*")):  # remove stale images from earlier runs
        if f.is_file() and f"{f.parent.name}/{f.name}" not in wanted:
            f.unlink()
    for d in sorted(img_root.iterdir()):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    digest = hashlib.sha256()
    for rel in rels:
        data = src.read_bytes(rel)
        digest.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        dst = img_root / rel
        dst.parent.mkdir(exist_ok=True)
        if not dst.is_file() or dst.read_bytes() != data:
            dst.write_bytes(data)
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8", newline="\n")

    n_ids = len({r.split("/")[0] for r in rels})
    print(f"wrote {out}: {n_train}+{n_train} train pairs, {n_val}+{n_val} val pairs, "
          f"{len(rels)} images of {n_ids} identities, {total:,} bytes (images + lists); "
          f"content sha256 {digest.hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
