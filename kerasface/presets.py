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
])


def get_pair_preset(name: str) -> PairExperiment:
    return _lookup(PAIR_PRESETS, name, "preset ")


# --- report 004: FaceNet NN2 (triplet trainer) ---------------------------------------------------

_FACENET = ("Report 004 (FaceNet monograph): NN2 at 224x224, 128-d unit embeddings, offline semi-hard "
            "selection inside each chunk, squared-distance hinge with FaceNet's margin 0.2")

TRIPLET_PRESETS: dict[str, TripletExperiment] = _table(TripletExperiment, [
    {"name": "facenet-nn2", "report": {"report": "004"},
     "description": f"{_FACENET}; the full-set settings: chunks of 8,000 photos, batch 80."},
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
         "min lr 1e-5), batch {batch}, at most 200 images per identity per epoch, random crop 0.8-1.0 + "
         "colour jitter 0.3-1.7, 224x224")
_R001_COMMON = {"image_size": 224, "augment": "report001-both", "optimizer": "adam", "schedule": "cosine_restarts",
                "cycle_epochs": 10, "min_lr": 1e-5, "batch_size": 200}
_THIN = {"thinresnet34": "thin_resnet34", "thinresnet50": "thin_resnet50", "thinresnet50v2": "thin_resnet50_v2"}
# report 001's validation EER (%) of the angular prototypical fine-tuning, batch 200, by backbone and M
_R001_EER = {("thinresnet34", 2): 4.023, ("thinresnet34", 3): 4.168, ("thinresnet34", 4): 4.283,
             ("thinresnet50", 2): 3.896, ("thinresnet50", 3): 3.927, ("thinresnet50", 4): 4.042,
             ("thinresnet50v2", 2): 3.854, ("thinresnet50v2", 3): 3.896, ("thinresnet50v2", 4): 3.948}


def _report001():
    for short, bb in _THIN.items():
        yield {"name": f"{short}-amsoftmax", "backbone": bb, "report": {"report": "001"},
               "description": _R001.format(bb=bb, what="pretraining with AM-softmax (s=30, m=0.1), 60 epochs",
                                           lr="1e-3", batch=200),
               "objective": "margin", "head": "amsoftmax", "scale": 30.0, "margin": 0.1, "learning_rate": 1e-3,
               "epochs": 60}
        for m in (2, 3, 4):
            what = (f"fine-tuning with the angular prototypical loss, M={m}, 50 epochs, from an AM-softmax run "
                    "folder (--init-from RUN_DIR)")
            yield {"name": f"{short}-angproto-m{m}", "backbone": bb,
                   "report": {"report": "001", "validation_eer_percent": _R001_EER[short, m]},
                   "description": _R001.format(bb=bb, what=what, lr="5e-4", batch=200)
                   + " (report: validation EER {validation_eer_percent:.3f} %)",
                   "objective": "angproto", "m_images": m, "min_images": m, "learning_rate": 5e-4, "epochs": 50}


_R003 = ("Report 003: torchvision ResNet34 with a 512-d linear embedding, {what}, AdamW lr 3e-4 wd 0.01, "
         "batch 16, 50 epochs, its five colour augmentations one at a time")
_R003_COMMON = {"backbone": "resnet34", "image_size": 224, "augment": "report003", "objective": "margin",
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

_R002 = ("Report 002 (NTU DLCV face recognition): {what}; Adam lr 1e-3, batch 64, 30 epochs, 160x160 "
         "(the report: CelebA 218x178 crops, 2,360 identities)")
_R002_COMMON = {"objective": "distillation", "image_size": 160, "optimizer": "adam", "learning_rate": 1e-3,
                "batch_size": 64, "epochs": 30, "max_per_identity": 1_000_000, "augment": "report001-both"}
_REPORT002 = [
    # The report names its teacher's tricks but not their weights. Pre-logit norm 1e-5 (p=1) is its
    # repository's; centre loss 0.01 is FaceNet's (davidsandberg) usual factor, with Wen et al.'s update rate
    # 0.5 (the repository's "alfa 0.95" is another update rule, docs/experiments/teacher-student.md); hard
    # instance mining keeps the hardest half of each batch; batch-hard triplet weight 1, margin 0.2, on
    # N x M = 16 x 4 batches.
    {"name": "incres-teacher", "backbone": "inception_resnet_v1",
     "report": {"report": "002", "validation_accuracy_percent": 88.91},
     "description": _R002.format(what="Inception-ResNet-v1 teacher with every trick of the ablation's last row "
                                      "(augmentation, centre loss, pre-logit norm, hard instance mining, triplet) "
                                      "(report: {validation_accuracy_percent:.2f} % validation)"),
     "center_weight": 0.01, "center_alpha": 0.5, "prelogit_norm_weight": 1e-5, "hard_mining_fraction": 0.5,
     "triplet_weight": 1.0, "triplet_margin": 0.2, "m_images": 4},
]
for _w, _bb, _plain, _ts in (("1.0", "sqnxt23v5_w1", None, 78.42), ("2.0", "sqnxt23v5_w2", 71.28, 85.98)):
    _REPORT002 += [
        {"name": f"sqnxt23v5-{_w}", "backbone": _bb,
         "report": {"report": "002", **({"validation_accuracy_percent": _plain} if _plain else {})},
         "description": _R002.format(what=f"SqNxt-23v5 width {_w} student trained alone with cross entropy"
                                          + (" (report: {validation_accuracy_percent:.2f} % validation)"
                                             if _plain else ""))},
        {"name": f"sqnxt23v5-{_w}-ts", "backbone": _bb, "teacher": "REQUIRED",
         "report": {"report": "002", "validation_accuracy_percent": _ts},
         "description": _R002.format(what=f"SqNxt-23v5 width {_w} student distilled from a teacher run folder "
                                          "(--teacher RUN_DIR): CE + embedding L2 + soft CE at T=4 "
                                          "(report: {validation_accuracy_percent:.2f} % validation)"),
         "embedding_l2_weight": 1.0, "soft_ce_weight": 1.0, "temperature": 4.0},
    ]

# --- report 002's idea with a pretrained teacher: embedding distillation from dlib-resnet-v1 -------------

_DISTILL_PRETRAINED = ("Students of {bb} distilled from the frozen pretrained dlib-resnet-v1 (its embeddings "
                       "of its own 150x150 dlib chips, --teacher-data, cached once per image and mirror): 1 - "
                       "cosine of the unit embeddings, no labels (people with one image too); 112x112 "
                       "ArcFace-aligned crops (--data), random flips; LFW pairs.txt folds 1-9's people, fold 10 "
                       "held out; Adam 1e-3, cosine restarts, batch 64, {epochs} epochs "
                       "(docs/experiments/teacher-student.md)")
# Report 002's basic augmentation (rotation, scale, colour) is not in this release's augmentations: flips only.
_DISTILL_PRETRAINED_COMMON = {
    "objective": "distillation", "embedding_teacher": "dlib-resnet-v1", "teacher_data": "REQUIRED",
    "embedding_distill_weight": 1.0, "embedding_distill_metric": "cosine", "ce_weight": 0.0,
    "image_size": 112, "flip": True, "augment": "none", "train_folds": tuple(range(1, 10)), "holdout_folds": (10,),
    "optimizer": "adam", "learning_rate": 1e-3, "schedule": "cosine_restarts", "min_lr": 1e-5,
    "batch_size": 64, "max_per_identity": 200, "verify_every": 2,
    "min_images": 1,  # no labels are used: people with one image teach as much as the others
    "bn_momentum": 0.99,  # runs of 900-1,800 steps: the BN statistics the saved student uses must keep up
}
_DISTILL_PRETRAINED_PRESETS = [
    {"name": "distill-sqnxt23v5-1.0", "backbone": "sqnxt23v5_w1", "epochs": 12, "cycle_epochs": 12.0,
     "description": _DISTILL_PRETRAINED.format(bb="SqNxt-23v5 width 1.0 (128-d)", epochs=12)},
    {"name": "distill-sqnxt23v5-2.0", "backbone": "sqnxt23v5_w2", "epochs": 6, "cycle_epochs": 6.0,
     "description": _DISTILL_PRETRAINED.format(bb="SqNxt-23v5 width 2.0 (128-d)", epochs=6)},
    {"name": "distill-vargfacenet", "backbone": "vargfacenet", "epochs": 4, "cycle_epochs": 4.0,
     "description": _DISTILL_PRETRAINED.format(bb="VarGFaceNet (512-d, + a 128-d projection)", epochs=4)},
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
