"""How fast does a student fit the dlib teacher's centred embeddings? A small in-memory probe.

Not a test and not the trainer: it takes 2,400 aligned LFW faces (at most 6 per person, people in a
seeded order), the pretrained teacher's unit embeddings of their dlib chips centred on the first
2,000's mean (as ``--embedding-distill-center``), and trains one student variant on those 2,000 for a
few epochs with the trainer's loss (1 - cosine), Adam and batch 64, without flips or augmentation.
It prints, per epoch, the mean training-mode loss (the figure to compare: with BN momentum 0.99 and
~30 steps an epoch the inference-mode cosines lag the weights) and the inference-mode mean cosines to
the targets of the training and the 400 other images. docs/experiments/teacher-student.md
("Second round") has what it measured.

    python3 scripts/distill_fit_probe.py --data ALIGNED_112 --teacher-data DLIB_150 --variant sqnxt_w1 \\
        --dropout 0 --epochs 6

Variants: ``sqnxt_w1`` / ``sqnxt_w2`` (report layout), ``sqnxt_w1_paper`` (the paper's layout),
``vargfacenet``; ``--linear-final`` drops the ReLU after SqNxt's final 1x1 conv, ``--linear-residual``
the ReLU at the end of each residual branch, ``--image-size 224`` upsamples the 112x112 faces.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import keras
import numpy as np
import tensorflow as tf

from kerasface.losses import embedding_distillation_loss
from kerasface.models import squeezenext
from kerasface.models.embedding_layers import with_projection
from kerasface.models.vargfacenet import vargfacenet
from kerasface.ops import normalize_faces
from kerasface.training.teacher_cache import centred_targets, load_embedding_teacher, teacher_embeddings


def pick_paths(folder: Path, n: int, per_person: int, seed: int) -> list[str]:
    people = sorted(p.name for p in folder.iterdir() if p.is_dir())
    np.random.default_rng(seed).shuffle(people)
    paths: list[str] = []
    for person in people:
        paths += sorted(f"{person}/{f.name}" for f in (folder / person).glob("*.jpg"))[:per_person]
        if len(paths) >= n:
            break
    if len(paths) < n:
        raise SystemExit(f"{folder}: only {len(paths)} faces, {n} needed")
    return paths[:n]


def build_student(args) -> keras.Model:
    kw = {"input_shape": (args.image_size, args.image_size, 3), "bn_momentum": args.bn_momentum}
    if args.variant == "vargfacenet":
        return with_projection(vargfacenet(**kw), 128, always=True)
    plain_conv = squeezenext._Builder.conv

    def conv(self, x, filters, kernel, name, **kwargs):
        if (args.linear_final and name == "final_conv") or (args.linear_residual and name.endswith("_conv5")):
            kwargs["activation"] = False
        return plain_conv(self, x, filters, kernel, name, **kwargs)

    squeezenext._Builder.conv = conv
    try:
        width = 2.0 if args.variant.startswith("sqnxt_w2") else 1.0
        layout = "paper" if args.variant.endswith("_paper") else "report"
        backbone = squeezenext.sqnxt23v5(width=width, layout=layout, dropout=args.dropout, **kw)
    finally:
        squeezenext._Builder.conv = plain_conv
    return with_projection(backbone, 128, always=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the students' aligned faces (kerasface align, 112x112)")
    ap.add_argument("--teacher-data", required=True, help="the teacher's dlib chips at the same relative paths")
    ap.add_argument("--variant", default="sqnxt_w1", choices=("sqnxt_w1", "sqnxt_w2", "sqnxt_w1_paper",
                                                              "vargfacenet"))
    ap.add_argument("--dropout", type=float, default=0.2, help="SqNxt's pooled-feature dropout (report: 0.2)")
    ap.add_argument("--linear-final", action="store_true")
    ap.add_argument("--linear-residual", action="store_true")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--bn-momentum", type=float, default=0.99)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--heldout", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="folder for the teacher's embeddings (reused between variants)")
    ap.add_argument("--json", default=None, help="append the per-epoch rows to this JSON-lines file")
    args = ap.parse_args(argv)

    data, chips = Path(args.data), Path(args.teacher_data)
    n = args.train + args.heldout
    paths = pick_paths(data, n, 6, args.seed)
    values, ok, _ = teacher_embeddings(load_embedding_teacher("dlib-resnet-v1"), paths, chips,
                                       cache_dir=args.cache)
    if not ok.all():
        raise SystemExit(f"{int((~ok).sum())} teacher chips missing under {chips}")
    targets = centred_targets(values, args.train)[0][:, 0]

    def face(path):
        image = cv2.imread(str(data / path))[:, :, ::-1]
        if image.shape[0] != args.image_size:
            image = cv2.resize(image, (args.image_size, args.image_size), interpolation=cv2.INTER_LINEAR)
        return normalize_faces(image)

    faces = np.stack([face(p) for p in paths])
    keras.utils.set_random_seed(args.seed)
    student = build_student(args)
    optimizer = keras.optimizers.Adam(args.learning_rate)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = embedding_distillation_loss(student(x, training=True), y)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    def mean_cosine(lo, hi):
        e = student.predict(faces[lo:hi], batch_size=128, verbose=0)
        return 1.0 - float(embedding_distillation_loss(e, targets[lo:hi]))

    rng = np.random.default_rng(args.seed)
    label = {k: v for k, v in vars(args).items() if k not in ("data", "teacher_data", "cache", "json")}
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(args.train)
        losses = [float(step(faces[order[i:i + 64]], targets[order[i:i + 64]]))
                  for i in range(0, args.train - 63, 64)]
        row = {**label, "epoch": epoch, "train_mode_loss": round(float(np.mean(losses)), 4),
               "train_cosine": round(mean_cosine(0, args.train), 4),
               "heldout_cosine": round(mean_cosine(args.train, n), 4), "seconds": round(time.time() - start)}
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
