"""Named presets: one per experiment of the source reports, as data over :mod:`kerasface.config`.

``kerasface presets`` lists them; :func:`find_preset` finds any by name.
"""

from __future__ import annotations

from kerasface.config import ClassifyExperiment, PairExperiment, TripletExperiment

__all__ = [
    "PAIR_PRESETS",
    "TRIPLET_PRESETS",
    "CLASSIFY_PRESETS",
    "get_pair_preset",
    "get_triplet_preset",
    "get_classify_preset",
    "find_preset",
]


PAIR_PRESETS: dict[str, PairExperiment] = {
    p.name: p
    for p in (
        PairExperiment(
            name="vargface",
            description="Report 000, original VarGFaceNet Siamese verifier: Adam, 20 epochs "
            "(report: val acc 0.789, val loss 0.469).",
        ),
        PairExperiment(
            name="vargface-reduced",
            description="Report 000, reduced VarGFaceNet (stage 3 with 4 normal blocks), 15 epochs "
            "(report: val acc 0.775, val loss 0.499).",
            backbone="vargfacenet_reduced",
            epochs=15,
        ),
        PairExperiment(
            name="vargface-lowlight",
            description="Report 000, original VarGFaceNet on darkened (low-light) images, 20 epochs "
            "(report: val acc 0.755, val loss 0.490).",
            low_light=True,
        ),
        PairExperiment(
            name="vargface-reduced-lowlight",
            description="Report 000, reduced VarGFaceNet on low-light images, 15 epochs "
            "(report: val acc 0.735, val loss 0.533).",
            backbone="vargfacenet_reduced",
            epochs=15,
            low_light=True,
        ),
    )
}


def get_pair_preset(name: str) -> PairExperiment:
    try:
        return PAIR_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; known: {', '.join(sorted(PAIR_PRESETS))}"
        ) from None


_FACENET = ("Report 004 (FaceNet monograph): NN2 at 224x224, 128-d unit embeddings, offline semi-hard "
            "selection inside each chunk, squared-distance hinge with FaceNet's margin 0.2")

TRIPLET_PRESETS: dict[str, TripletExperiment] = {
    p.name: p
    for p in (
        TripletExperiment(
            name="facenet-nn2",
            description=f"{_FACENET}; the full-set settings: chunks of 8,000 photos, batch 80.",
        ),
        TripletExperiment(
            name="facenet-nn2-finetune",
            description=f"{_FACENET}; the fine-tune-set settings: chunks of 1,000 photos, batch 100, 100 epochs.",
            chunk_size=1000,
            batch_size=100,
            epochs=100,
        ),
        TripletExperiment(
            name="facenet-nn2-cpu",
            description="NN2 at 96x96 on the central half of each LFW image, semi-hard triplets mined online "
            "in P x K = 16 x 4 batches of each 8,000-photo chunk, 8 epochs, verification every epoch: "
            "about 40 minutes on LFW on a shared 2-core CPU (docs/experiments/facenet.md).",
            image_size=96,
            center_crop=0.5,
            mining="semi_hard",
            batch_size=64,
            epochs=8,
            bn_momentum=0.9,
            verify_every=1,
        ),
    )
}


def get_triplet_preset(name: str) -> TripletExperiment:
    try:
        return TRIPLET_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown triplet preset {name!r}; known: {', '.join(sorted(TRIPLET_PRESETS))}"
        ) from None


_R001 = ("Report 001: {bb} {what}; Adam (0.9, 0.999, 1e-8) lr {lr}, cosine warm restarts (cycle 10 epochs, "
         "min lr 1e-5), batch {batch}, at most 200 images per identity per epoch, random crop 0.8-1.0 + "
         "colour jitter 0.3-1.7, 224x224")
_THIN = {"thinresnet34": "thin_resnet34", "thinresnet50": "thin_resnet50", "thinresnet50v2": "thin_resnet50_v2"}
# report 001's validation EER (%), batch 200, for the presets' descriptions
_R001_EER = {("thinresnet34", 2): "4.023", ("thinresnet34", 3): "4.168", ("thinresnet34", 4): "4.283",
             ("thinresnet50", 2): "3.896", ("thinresnet50", 3): "3.927", ("thinresnet50", 4): "4.042",
             ("thinresnet50v2", 2): "3.854", ("thinresnet50v2", 3): "3.896", ("thinresnet50v2", 4): "3.948"}


def _report001_presets():
    for short, bb in _THIN.items():
        yield ClassifyExperiment(
            name=f"{short}-amsoftmax",
            description=_R001.format(bb=bb, what="pretraining with AM-softmax (s=30, m=0.1), 60 epochs",
                                     lr="1e-3", batch=200),
            backbone=bb, image_size=224, augment="report001-both", objective="margin", head="amsoftmax",
            scale=30.0, margin=0.1, optimizer="adam", learning_rate=1e-3, schedule="cosine_restarts",
            cycle_epochs=10, min_lr=1e-5, epochs=60, batch_size=200)
        for m in (2, 3, 4):
            yield ClassifyExperiment(
                name=f"{short}-angproto-m{m}",
                description=_R001.format(bb=bb, what=f"fine-tuning with the angular prototypical loss, M={m}, "
                                         "50 epochs, from an AM-softmax run folder (--init-from RUN_DIR)",
                                         lr="5e-4", batch=200) + f" (report: validation EER {_R001_EER[short, m]} %)",
                backbone=bb, image_size=224, augment="report001-both", objective="angproto", m_images=m,
                min_images=m, optimizer="adam", learning_rate=5e-4, schedule="cosine_restarts",
                cycle_epochs=10, min_lr=1e-5, epochs=50, batch_size=200)


_R003 = ("Report 003: torchvision ResNet34 with a 512-d linear embedding, {what}, AdamW lr 3e-4 wd 0.01, "
         "batch 16, 50 epochs, its five colour augmentations one at a time")

CLASSIFY_PRESETS: dict[str, ClassifyExperiment] = {
    p.name: p
    for p in (
        *_report001_presets(),
        ClassifyExperiment(
            name="resnet34-arcface",
            description=_R003.format(what="ArcFace (s=5, m=0.1)") + " (report: validation accuracy 0.7 by epoch 43)",
            backbone="resnet34", image_size=224, augment="report003", objective="margin", head="arcface",
            scale=5.0, margin=0.1, optimizer="adamw", learning_rate=3e-4, weight_decay=0.01, epochs=50,
            batch_size=16, max_per_identity=1_000_000),
        ClassifyExperiment(
            name="resnet34-softmax",
            description=_R003.format(what="a plain softmax classifier with cross entropy"),
            backbone="resnet34", image_size=224, augment="report003", objective="margin", head="softmax",
            optimizer="adamw", learning_rate=3e-4, weight_decay=0.01, epochs=50, batch_size=16,
            max_per_identity=1_000_000),
    )
}


_R002 = ("Report 002 (NTU DLCV face recognition): {what}; Adam lr 1e-3, batch 64, 30 epochs, 160x160 "
         "(the report: CelebA 218x178 crops, 2,360 identities)")
# The report names its teacher's tricks but not their weights. Pre-logit norm 1e-5 (p=1) is its repository's;
# centre loss 0.01 is FaceNet's (davidsandberg) usual factor, with Wen et al.'s update rate 0.5 (the repository's
# "alfa 0.95" is another update rule, docs/experiments/teacher-student.md); hard instance mining keeps the
# hardest half of each batch; batch-hard triplet weight 1, margin 0.2, on N x M = 16 x 4 batches.
_TEACHER_TRICKS = dict(augment="report001-both", center_weight=0.01, center_alpha=0.5, prelogit_norm_weight=1e-5,
                       hard_mining_fraction=0.5, triplet_weight=1.0, triplet_margin=0.2, m_images=4)
_TS = dict(embedding_l2_weight=1.0, soft_ce_weight=1.0, temperature=4.0, augment="report001-both")


def _report002_presets():
    common = dict(objective="report002", image_size=160, optimizer="adam", learning_rate=1e-3, batch_size=64,
                  epochs=30, max_per_identity=1_000_000)
    yield ClassifyExperiment(
        name="incres-teacher", backbone="inception_resnet_v1",
        description=_R002.format(what="Inception-ResNet-v1 teacher with every trick of the ablation's last row "
                                      "(augmentation, centre loss, pre-logit norm, hard instance mining, triplet) "
                                      "(report: 88.91 % validation)"),
        **common, **_TEACHER_TRICKS)
    for w, bb, plain, ts in (("1.0", "sqnxt23v5_w1", None, "78.42"), ("2.0", "sqnxt23v5_w2", "71.28", "85.98")):
        yield ClassifyExperiment(
            name=f"sqnxt23v5-{w}", backbone=bb, augment="report001-both",
            description=_R002.format(what=f"SqNxt-23v5 width {w} student trained alone with cross entropy"
                                          + (f" (report: {plain} % validation)" if plain else "")),
            **common)
        yield ClassifyExperiment(
            name=f"sqnxt23v5-{w}-ts", backbone=bb,
            description=_R002.format(what=f"SqNxt-23v5 width {w} student distilled from a teacher run folder "
                                          f"(--teacher RUN_DIR): CE + embedding L2 + soft CE at T=4 "
                                          f"(report: {ts} % validation)"),
            teacher="REQUIRED", **common, **_TS)


CLASSIFY_PRESETS.update({p.name: p for p in _report002_presets()})


def get_classify_preset(name: str) -> ClassifyExperiment:
    try:
        return CLASSIFY_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown classification preset {name!r}; known: {', '.join(sorted(CLASSIFY_PRESETS))}"
        ) from None


def find_preset(name: str) -> tuple[str, PairExperiment | TripletExperiment | ClassifyExperiment]:
    """``(kind, preset)`` for any preset name; kind is ``"pairs"``, ``"triplet"`` or ``"classify"``."""
    for kind, table in (("pairs", PAIR_PRESETS), ("triplet", TRIPLET_PRESETS), ("classify", CLASSIFY_PRESETS)):
        if name in table:
            return kind, table[name]
    known = sorted([*PAIR_PRESETS, *TRIPLET_PRESETS, *CLASSIFY_PRESETS])
    raise ValueError(f"unknown preset {name!r}; known: {', '.join(known)}")
