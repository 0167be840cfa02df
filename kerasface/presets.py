"""Named presets: one per experiment of the source reports, as data over :mod:`kerasface.config`.

Each preset is a dict of the settings it changes from the schema's defaults,
plus a ``report`` dict: the source report's id and the figures it gives
(``PRESET_REPORTS[name]``, also used by the one-line descriptions). Settings
shared by a family of presets are declared once, in that family's ``common``
dict. ``kerasface presets`` lists them; :func:`find_preset` finds any by name.
This module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

from kerasface.config import ClassifyExperiment, PairExperiment, TripletExperiment

__all__ = [
    "CLASSIFY_PRESETS",
    "PAIR_PRESETS",
    "PRESET_REPORTS",
    "TRIPLET_PRESETS",
    "find_preset",
    "get_classify_preset",
    "get_pair_preset",
    "get_triplet_preset",
    "preset_report",
]

#: ``{preset name: {"report": report id, figure: value, ...}}``: what the source report measured.
PRESET_REPORTS: dict[str, dict] = {}


def _table(schema, entries, common=None) -> dict:
    """``{name: schema(**common, **entry)}``; an entry's ``report`` goes to :data:`PRESET_REPORTS` and fills
    the ``{figure}`` fields of its description."""
    table = {}
    for entry in entries:
        entry = {**(common or {}), **entry}
        report = entry.pop("report", {})
        entry["description"] = entry["description"].format(**report)
        preset = schema(**entry)
        table[preset.name] = preset
        PRESET_REPORTS[preset.name] = report
    return table


def _lookup(table: dict, name: str, what: str):
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {what}{name!r}; known: {', '.join(sorted(table))}") from None


# --- report 000: Siamese verifiers (pair trainer) ------------------------------------------------

_R000 = "(report: val acc {val_accuracy:.3f}, val loss {val_loss:.3f})."
_REDUCED = {"backbone": "vargfacenet_reduced", "epochs": 15}

PAIR_PRESETS: dict[str, PairExperiment] = _table(PairExperiment, [
    {"name": "vargface", "report": {"report": "000", "val_accuracy": 0.789, "val_loss": 0.469},
     "description": "Report 000, original VarGFaceNet Siamese verifier: Adam, 20 epochs " + _R000},
    {"name": "vargface-reduced", "report": {"report": "000", "val_accuracy": 0.775, "val_loss": 0.499},
     "description": "Report 000, reduced VarGFaceNet (stage 3 with 4 normal blocks), 15 epochs " + _R000,
     **_REDUCED},
    {"name": "vargface-lowlight", "report": {"report": "000", "val_accuracy": 0.755, "val_loss": 0.490},
     "description": "Report 000, original VarGFaceNet on darkened (low-light) images, 20 epochs " + _R000,
     "low_light": True},
    {"name": "vargface-reduced-lowlight", "report": {"report": "000", "val_accuracy": 0.735, "val_loss": 0.533},
     "description": "Report 000, reduced VarGFaceNet on low-light images, 15 epochs " + _R000,
     "low_light": True, **_REDUCED},
    {"name": "vargface-init", "init_from": "REQUIRED", "freeze_backbone": True, "epochs": 5,
     "description": "Report 000's verifier on a trained VarGFaceNet backbone (--init-from RUN_DIR: an identity "
                    "classifier or a distilled student of other people), beyond the report: the head "
                    "(|f1 - f2|, Dense 64, softmax 2) trained on the pairs with the backbone frozen, 5 epochs"},
])


def get_pair_preset(name: str) -> PairExperiment:
    return _lookup(PAIR_PRESETS, name, "preset ")


# --- report 004: FaceNet NN2 (triplet trainer) ---------------------------------------------------

_FACENET = ("Report 004 (FaceNet monograph): NN2 at 224x224, 128-d unit embeddings, offline semi-hard "
            "selection inside each chunk, squared-distance hinge with FaceNet's margin 0.2")

TRIPLET_PRESETS: dict[str, TripletExperiment] = _table(TripletExperiment, [
    {"name": "facenet-nn2", "report": {"report": "004"},
     "description": f"{_FACENET}; the full-set settings: chunks of 8,000 photos, batch 80, 100 epochs.",
     "epochs": 100},
    {"name": "facenet-nn2-finetune", "report": {"report": "004"},
     "description": f"{_FACENET}; the fine-tune-set settings: chunks of 1,000 photos, batch 100, 100 epochs.",
     "chunk_size": 1000, "batch_size": 100, "epochs": 100},
    {"name": "facenet-nn2-cpu",
     "description": "NN2 at 96x96 on the central half of each LFW image, semi-hard triplets mined online "
                    "in P x K = 16 x 4 batches of each 8,000-photo chunk, 8 epochs, verification every epoch: "
                    "about 40 minutes on LFW on a shared 2-core CPU (docs/experiments/facenet.md).",
     "image_size": 96, "center_crop": 0.5, "mining": "semi_hard", "batch_size": 64, "epochs": 8,
     "bn_momentum": 0.9, "verify_every": 1},
])


def get_triplet_preset(name: str) -> TripletExperiment:
    return _lookup(TRIPLET_PRESETS, name, "triplet preset ")


# --- reports 001, 003, 002: classification, angular prototypical, distillation ------------------

_R001 = ("Report 001: {bb} {what}; Adam (0.9, 0.999, 1e-8) lr {lr}, cosine warm restarts (cycle 10 epochs, "
         "min lr 1e-5), batch {batch}, at most 200 images per identity per epoch, {aug}, 224x224")
# "For each the training above, I use cropping ... from 0.8 to 1"; colour jitter was a trial (its last table).
_R001_COMMON = {"image_size": 224, "augment": "report001-crop", "optimizer": "adam", "schedule": "cosine_restarts",
                "cycle_epochs": 10, "min_lr": 1e-5, "batch_size": 200}
_R001_AUG = {"none": "no augmentation", "report001-crop": "random crop 0.8-1.0",
             "report001-jitter": "colour jitter 0.3-1.7",
             "report001-both": "random crop 0.8-1.0 + colour jitter 0.3-1.7"}
_THIN = {"thinresnet34": "thin_resnet34", "thinresnet50": "thin_resnet50", "thinresnet50v2": "thin_resnet50_v2"}
# report 001's validation EER (%) of the angular prototypical fine-tuning, batch 200, by backbone and M
_R001_EER = {("thinresnet34", 2): 4.023, ("thinresnet34", 3): 4.168, ("thinresnet34", 4): 4.283,
             ("thinresnet50", 2): 3.896, ("thinresnet50", 3): 3.927, ("thinresnet50", 4): 4.042,
             ("thinresnet50v2", 2): 3.854, ("thinresnet50v2", 3): 3.896, ("thinresnet50v2", 4): 3.948}


def _report001():
    for short, bb in _THIN.items():
        yield {"name": f"{short}-amsoftmax", "backbone": bb, "report": {"report": "001"},
               "description": _R001.format(bb=bb, what="pretraining with AM-softmax (s=30, m=0.1), 60 epochs",
                                           lr="1e-3", batch=200, aug=_R001_AUG["report001-crop"]),
               "objective": "margin", "head": "amsoftmax", "scale": 30.0, "margin": 0.1, "learning_rate": 1e-3,
               "epochs": 60}
        for m in (2, 3, 4):
            what = (f"fine-tuning with the angular prototypical loss, M={m}, 50 epochs, from an AM-softmax run "
                    "folder (--init-from RUN_DIR)")
            yield {"name": f"{short}-angproto-m{m}", "backbone": bb,
                   "report": {"report": "001", "validation_eer_percent": _R001_EER[short, m]},
                   "description": _R001.format(bb=bb, what=what, lr="5e-4", batch=200, aug=_R001_AUG["report001-crop"])
                   + " (report: validation EER {validation_eer_percent:.3f} %)",
                   "objective": "angproto", "m_images": m, "min_images": m, "learning_rate": 5e-4, "epochs": 50}
    # its batch-size table (M = 2, batch 250) and, for ThinResNet50_V2 at batch 250, its augmentation table
    for short, eer in (("thinresnet50", 3.88153), ("thinresnet50v2", 3.76251)):
        yield {"name": f"{short}-angproto-m2-b250", "backbone": _THIN[short],
               "report": {"report": "001", "validation_eer_percent": eer},
               "description": _R001.format(bb=_THIN[short], what="fine-tuning with the angular prototypical loss, "
                                           "M=2, 50 epochs, from an AM-softmax run folder (--init-from RUN_DIR)",
                                           lr="5e-4", batch=250, aug=_R001_AUG["report001-crop"])
               + " (report: validation EER {validation_eer_percent:.3f} %)",
               "objective": "angproto", "m_images": 2, "min_images": 2, "learning_rate": 5e-4, "epochs": 50,
               "batch_size": 250}
    for aug, eer in (("none", 4.17125), ("jitter", 4.20835), ("both", 3.79513)):
        policy = "none" if aug == "none" else f"report001-{aug}"
        yield {"name": f"thinresnet50v2-angproto-m2-b250-aug-{aug}", "backbone": "thin_resnet50_v2",
               "report": {"report": "001", "validation_eer_percent": eer},
               "description": _R001.format(bb="thin_resnet50_v2", what="fine-tuning with the angular prototypical "
                                           "loss, M=2, 50 epochs, from an AM-softmax run folder (--init-from RUN_DIR)",
                                           lr="5e-4", batch=250, aug=_R001_AUG[policy])
               + " (report: validation EER {validation_eer_percent:.3f} %)",
               "objective": "angproto", "m_images": 2, "min_images": 2, "learning_rate": 5e-4, "epochs": 50,
               "batch_size": 250, "augment": policy}


_R003 = ("Report 003: torchvision ResNet34 with a 512-d linear embedding, {what}, AdamW lr 3e-4 wd 0.01, "
         "batch 16, 50 epochs, its five augmentations one at a time: the fixed 6x set with the originals")
# "compose_augmentations": False over its five transforms: each epoch the originals and one copy through each
_R003_COMMON = {"backbone": "resnet34", "image_size": 224, "augment": "report003", "augment_fixed_set": True,
                "objective": "margin",
                "optimizer": "adamw", "learning_rate": 3e-4, "weight_decay": 0.01, "epochs": 50, "batch_size": 16,
                "max_per_identity": 1_000_000}
_REPORT003 = [
    {"name": "resnet34-arcface", "report": {"report": "003", "validation_accuracy": 0.7, "epoch": 43},
     "description": _R003.format(what="ArcFace (s=5, m=0.1)")
     + " (report: validation accuracy {validation_accuracy} by epoch {epoch})",
     "head": "arcface", "scale": 5.0, "margin": 0.1},
    {"name": "resnet34-softmax", "report": {"report": "003"},
     "description": _R003.format(what="a plain softmax classifier with cross entropy"), "head": "softmax"},
]
# "one linear layer as the last works better than a sequence of several" (1.5x the classification quality);
# the stack's depth is not given: 3 linear layers with ReLU between them here
_REPORT003.append({"name": "resnet34-arcface-stack", "report": {"report": "003"}, "head": "arcface", "scale": 5.0,
                   "margin": 0.1, "embedding_layers": 3,
                   "description": _R003.format(what="ArcFace (s=5, m=0.1)").replace(
                       "a 512-d linear embedding", "a stack of three 512-d linear layers (ReLU between)")})
# the other backbones the report tried (resnet34 was its best; it gives no figures for these). The report
# starts from torchvision's ImageNet weights; these start from scratch unless --pretrained imagenet.
for _bb, _label in (("resnet50", "ResNet50"), ("efficientnet_b0", "EfficientNet-B0"),
                    ("efficientnet_v2_m", "EfficientNetV2-M")):
    _REPORT003.append({"name": f"{_bb.replace('_', '-')}-arcface", "backbone": _bb, "report": {"report": "003"},
                       "head": "arcface", "scale": 5.0, "margin": 0.1,
                       "description": _R003.format(what="ArcFace (s=5, m=0.1)").replace(
                           "torchvision ResNet34", f"keras.applications {_label}")})

# Report 002 as its authors' code runs it (davidjaw/NTU-DLCV-final-Face-Recognition: train_teacher.py,
# train_student.py, train_TS.py, utils.py, data_reader.py; docs/experiments/teacher-student.md):
# Adam, batch 100, 224x224 inputs (its reader crops the face and resizes it to 224x224), the script default of
# 500 epochs, random batches. Its loss forms: centre loss davidsandberg-style on the pre-logits (alfa 0.95),
# pre-logit norm, threshold hard mining (x0.7 below 0.7 x the batch maximum), batch-hard triplet (margin 1,
# every anchor, raw euclidean distances) on a separate 128-d linear embedding. Each term is added once here;
# --loss-sum doubling gives the code's sum. train_teacher.py never advances its global step, so its
# exponential decay never fires: a constant rate.
_R002 = "Report 002 (NTU DLCV face recognition): {what}; Adam lr {lr:g}, batch 100, {epochs} epochs, 224x224"
_R002_COMMON = {"objective": "distillation", "image_size": 224, "optimizer": "adam", "learning_rate": 1e-3,
                "batch_size": 100, "epochs": 500, "max_per_identity": 1_000_000, "augment": "none",
                "center_update": "sandberg", "center_alpha": 0.95, "triplet_margin": 1.0,
                "triplet_embedding_dim": 128, "triplet_normalize": False, "triplet_average": "all",
                "triplet_batches": "random"}
_TEACHER = {"backbone": "inception_resnet_v1_nobn"}
_CENTER = {"center_weight": 1e-4}
_PLN = {"prelogit_norm_weight": 1e-4}
_HIM_TRIPLET = {"hard_mining_threshold": 0.7, "triplet_weight": 1.0}
_BASIC, _SEAWEED = {"augment": "basic"}, {"augment": "basic-seaweed"}
# The seven rows of the report's teacher ablation (validation accuracy, %): flags of each row, from scratch
# at the code's rate for a first training (1e-3). The rows between the first and the last are not scripts
# of the repository: its factors for centre loss and pre-logit norm at level 2 (1e-4) are used for them.
_ABLATION = [
    ("none", "no tricks", {}, 30.0),
    ("basic", "basic augmentation", _BASIC, 67.4),
    ("seaweed", "basic + seaweed augmentation", _SEAWEED, 72.0),
    ("center", "basic augmentation + centre loss", {**_BASIC, **_CENTER}, 75.75),
    ("seaweed-center", "basic + seaweed + centre loss", {**_SEAWEED, **_CENTER}, 78.11),
    ("seaweed-center-pln", "basic + seaweed + centre loss + pre-logit norm", {**_SEAWEED, **_CENTER, **_PLN}, 81.81),
    ("all", "every trick: + hard instance mining + triplet", {**_SEAWEED, **_CENTER, **_PLN, **_HIM_TRIPLET}, 88.91),
]
_REPORT002 = [
    {"name": "incres-teacher", **_TEACHER, **_ABLATION[-1][2],
     "report": {"report": "002", "validation_accuracy_percent": 88.91, "test_accuracy_percent": 85.59},
     "description": _R002.format(what="Inception-ResNet-v1 teacher (teacher.py: no BN, 1792-d pre-logits) "
                                      "with every trick of the ablation's last row, from scratch "
                                      "(report: {validation_accuracy_percent:.2f} % validation)",
                                 lr=1e-3, epochs=500)},
]
for _i, (_key, _what, _flags, _acc) in enumerate(_ABLATION, start=1):
    _REPORT002.append(
        {"name": f"incres-teacher-ablation-{_i}-{_key}", **_TEACHER, **_flags,
         "report": {"report": "002", "validation_accuracy_percent": _acc},
         "description": _R002.format(what=f"teacher ablation row {_i}: {_what} "
                                          "(report: {validation_accuracy_percent:g} % validation)",
                                     lr=1e-3, epochs=500)})
# The code's own path to its teacher: --finetune_level 0, then 1 and 2 each from the previous run (--load).
_REPORT002 += [
    {"name": "incres-teacher-stage0", **_TEACHER, "report": {"report": "002"},
     "description": _R002.format(what="teacher stage 0 of train_teacher.py (no augmentation, cross entropy)",
                                 lr=1e-3, epochs=500)},
    {"name": "incres-teacher-stage1", **_TEACHER, **_BASIC, "center_weight": 1e-5, "prelogit_norm_weight": 1e-5,
     "init_from": "REQUIRED", "report": {"report": "002"},
     "description": _R002.format(what="teacher stage 1 of train_teacher.py from a stage-0 run folder "
                                      "(--init-from RUN_DIR): basic augmentation, centre loss and pre-logit norm "
                                      "1e-5", lr=1e-3, epochs=500)},
    {"name": "incres-teacher-stage2", **_TEACHER, **_ABLATION[-1][2], "learning_rate": 5e-5,
     "init_from": "REQUIRED", "report": {"report": "002", "validation_accuracy_percent": 88.91},
     "description": _R002.format(what="teacher stage 2 of train_teacher.py from a stage-1 run folder "
                                      "(--init-from RUN_DIR): every trick at 1e-4 "
                                      "(report: {validation_accuracy_percent:.2f} % validation)",
                                 lr=5e-5, epochs=500)},
]
# train_student.py (level 2): the student alone with the teacher's level-2 tricks, lr 1e-4 / 2;
# train_TS.py (level 2): mean squared (projection(student pre-logits) - teacher pre-logits) + soft CE of a
# classifier on the projection + 0.5 soft CE of the student's logits (T = 1, log(q + 1e-6)) + CE with the
# labels, lr 5e-5 decayed x0.9 every 10,000 steps.
_TS = {"embedding_l2_weight": 1.0, "embedding_l2_reduction": "mean", "projected_soft_ce_weight": 1.0,
       "soft_ce_weight": 0.5, "soft_ce_kind": "ce_eps", "temperature": 1.0, "projection_bias": True,
       "learning_rate": 5e-5, "schedule": "exponential_staircase", "decay_steps": 10000, "decay_rate": 0.9}
for _w, _bb, _plain, _ts in (("1.0", "sqnxt23v5_w1", None, 78.42), ("2.0", "sqnxt23v5_w2", 71.28, 85.98)):
    _REPORT002 += [
        {"name": f"sqnxt23v5-{_w}", "backbone": _bb, **_ABLATION[-1][2], "learning_rate": 5e-5,
         "report": {"report": "002", **({"validation_accuracy_percent": _plain} if _plain else {})},
         "description": _R002.format(what=f"SqNxt-23v5 width {_w} student trained alone (train_student.py, "
                                          "every trick)" + (" (report: {validation_accuracy_percent:.2f} % "
                                                            "validation)" if _plain else ""),
                                     lr=5e-5, epochs=500)},
        {"name": f"sqnxt23v5-{_w}-ts", "backbone": _bb, "teacher": "REQUIRED", **_SEAWEED, **_TS,
         "report": {"report": "002", "validation_accuracy_percent": _ts},
         "description": _R002.format(what=f"SqNxt-23v5 width {_w} student distilled from a teacher run folder "
                                          "(--teacher RUN_DIR) as train_TS.py: pre-logit regression + soft CE "
                                          "(T=1) + CE (report: {validation_accuracy_percent:.2f} % validation)",
                                     lr=5e-5, epochs=500)},
    ]

# --- report 002's idea with a pretrained teacher: embedding distillation from dlib-resnet-v1 -------------

_DISTILL_PRETRAINED = ("Students of {bb} distilled from the frozen pretrained dlib-resnet-v1 (its embeddings "
                       "of its own 150x150 dlib chips, --teacher-data, cached once per image and mirror): 1 - "
                       "cosine to the teacher's unit embeddings centred on their training mean, no labels "
                       "(people with one image too); 112x112 "
                       "ArcFace-aligned crops (--data), random flips; LFW pairs.txt folds 1-9's people, fold 10 "
                       "held out; Adam 1e-3, cosine restarts, batch 64, {epochs} epochs "
                       "(docs/experiments/teacher-student.md)")
# Flips only: --augment basic (report 002's, without its own flip when there are teacher targets) made the
# 1.0 student worse (fold 10 74.83 % against 85.17 %; docs/experiments/teacher-student.md, "Third round").
_DISTILL_PRETRAINED_COMMON = {
    "objective": "distillation", "embedding_teacher": "dlib-resnet-v1", "teacher_data": "REQUIRED",
    "embedding_distill_weight": 1.0, "embedding_distill_metric": "cosine", "ce_weight": 0.0,
    # dlib's unit embeddings of LFW share one direction (mean of norm 0.91): the students learned only that
    # (fold 10 at chance) until the targets were centred on it
    "embedding_distill_center": True,
    "image_size": 112, "flip": True, "augment": "none", "train_folds": tuple(range(1, 10)), "holdout_folds": (10,),
    "optimizer": "adam", "learning_rate": 1e-3, "schedule": "cosine_restarts", "min_lr": 1e-5,
    "batch_size": 64, "max_per_identity": 200, "verify_every": 2,
    "min_images": 1,  # no labels are used: people with one image teach as much as the others
    "bn_momentum": 0.99,  # runs of 900-1,800 steps: the BN statistics the saved student uses must keep up
}
# SqNxt-23v5's 128-d embedding is pooled ReLU features (>= 0): a projection makes it signed like the
# teacher's (without it the first runs stalled at cosine 0.63 to the teacher, chance on fold 10).
# No dropout on the pooled features (report 002's 0.2 is for its classifier): the projection regresses
# the teacher's embedding from them, and with 0.2 the students fitted it more slowly. Two cosine cycles
# of 20 epochs: the second (measured as a run --init-from the first) took the 1.0 student from 72 to 85 %.
_DISTILL_SQNXT = {"epochs": 40, "cycle_epochs": 20.0, "distill_projection": "always", "dropout": 0.0}
_DISTILL_VARGFACENET = {"epochs": 8, "cycle_epochs": 4.0}
_DISTILL_PRETRAINED_PRESETS = [
    *({"name": f"distill-sqnxt23v5-{w}", "backbone": bb, **_DISTILL_SQNXT,
       "description": _DISTILL_PRETRAINED.format(bb=f"SqNxt-23v5 width {w} (128-d, no dropout, + a 128-d "
                                                    "projection)", epochs=_DISTILL_SQNXT["epochs"])}
      for w, bb in (("1.0", "sqnxt23v5_w1"), ("2.0", "sqnxt23v5_w2"))),
    # Two cosine cycles of 4 epochs: fold 10 90.00 % (AUC 0.963) against 88.00 % (0.955) with one cycle
    {"name": "distill-vargfacenet", "backbone": "vargfacenet", **_DISTILL_VARGFACENET,
     "description": _DISTILL_PRETRAINED.format(bb="VarGFaceNet (512-d, + a 128-d projection)",
                                               epochs=_DISTILL_VARGFACENET["epochs"])},
]

CLASSIFY_PRESETS: dict[str, ClassifyExperiment] = {
    **_table(ClassifyExperiment, _report001(), _R001_COMMON),
    **_table(ClassifyExperiment, _REPORT003, _R003_COMMON),
    **_table(ClassifyExperiment, _REPORT002, _R002_COMMON),
    **_table(ClassifyExperiment, _DISTILL_PRETRAINED_PRESETS, _DISTILL_PRETRAINED_COMMON),
}


def get_classify_preset(name: str) -> ClassifyExperiment:
    return _lookup(CLASSIFY_PRESETS, name, "classification preset ")


def find_preset(name: str) -> tuple[str, PairExperiment | TripletExperiment | ClassifyExperiment]:
    """``(kind, preset)`` for any preset name; kind is ``"pairs"``, ``"triplet"`` or ``"classify"``."""
    for kind, table in (("pairs", PAIR_PRESETS), ("triplet", TRIPLET_PRESETS), ("classify", CLASSIFY_PRESETS)):
        if name in table:
            return kind, table[name]
    known = sorted([*PAIR_PRESETS, *TRIPLET_PRESETS, *CLASSIFY_PRESETS])
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(known)}")


def preset_report(name: str) -> dict:
    """The source report's id and figures for a preset (``{}`` when it reproduces no report)."""
    find_preset(name)
    return dict(PRESET_REPORTS[name])
