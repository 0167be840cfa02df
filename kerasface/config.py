"""The settings schema of the three trainers: one frozen dataclass per kind of run.

A run's settings are a :class:`PairExperiment` (Siamese pair verification),
:class:`TripletExperiment` (triplet-loss embedding) or :class:`ClassifyExperiment`
(classification / angular prototypical / distillation). Named presets over these
schemas live in :mod:`kerasface.presets`; command-line flags override their fields
with :meth:`override`, and the resolved settings are written to the run folder as
``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = [
    "PairExperiment",
    "TripletExperiment",
    "ClassifyExperiment",
    "TRIPLET_MINING",
    "TRIPLET_STACK_LOSSES",
    "CLASSIFY_OBJECTIVES",
    "CLASSIFY_HEADS",
    "upgrade_settings",
]


class _Preset:
    """``to_dict`` / ``override`` shared by every preset dataclass.

    ``_FOLD_FIELDS`` name fields holding fold tuples: JSON lists in ``to_dict``,
    integer tuples after ``override``.
    """

    _FOLD_FIELDS: tuple = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in self._FOLD_FIELDS:
            d[k] = None if d[k] is None else list(d[k])
        return d

    def _bad(self, msg):
        raise ValueError(f"preset {self.name!r}: {msg}")

    def _check_identity_split(self) -> None:
        """Checks shared by the presets that pick training identities by fold (triplet, classification)."""
        bad = self._bad
        if self.on_error not in ("skip", "error"):
            bad(f"on_error must be skip or error, got {self.on_error!r}")
        if not 0.0 < self.center_crop <= 1.0:
            bad(f"center_crop must be in (0, 1], got {self.center_crop}")
        for folds_name in ("holdout_folds", "train_folds"):
            folds = getattr(self, folds_name)
            if folds is not None and (not folds or any(int(f) < 1 for f in folds)):
                bad(f"{folds_name} are numbered from 1, got {folds}")
        if self.train_folds and set(self.train_folds) & set(self.holdout_folds):
            bad(f"train_folds {self.train_folds} overlap holdout_folds {self.holdout_folds}")

    def override(self, **changes):
        """A copy with ``changes`` applied; ``None`` values are ignored; unknown keys raise."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise ValueError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
        changes = {k: v for k, v in changes.items() if v is not None}
        for k in self._FOLD_FIELDS:
            if k in changes:
                changes[k] = tuple(int(f) for f in changes[k])
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class PairExperiment(_Preset):
    """A Siamese pair-verification run (report 000)."""

    name: str
    description: str = ""
    backbone: str = "vargfacenet"
    # Data. ``data`` None = the bundled LFW sample in the repository's data/.
    data: str | None = None
    train_pairs: str | None = None  # None = pairs.txt, else pairsTrain.txt next to the data
    val_pairs: str | None = None  # None = pairsDevTest.txt, else pairsVal.txt
    image_size: int = 112
    center_crop: float = 1.0  # fraction of the shorter side kept before resizing (1.0: whole image, as the report)
    low_light: bool = False
    low_light_seed: int = 1234
    augment: bool = False  # random horizontal flips of each face
    on_missing: str = "skip"  # pairs naming a missing image: skip (reported) or error
    on_error: str = "skip"  # corrupt images: skip (logged, counted) or error
    # Model.
    hidden_units: int = 64
    dropout: float = 0.5
    group_conv: str = "auto"  # grouped-conv path: auto | native | depthwise | split
    # Optimisation (report 000: Adam, 20 epochs; Keras defaults otherwise).
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    # Verification metrics (AUC, EER, accuracy) on the validation list every N epochs; 0 = only at the end.
    verify_every: int = 0
    # Output.
    out: str = "runs"


#: Triplet selection: "offline" = FaceNet's selection within each decoded chunk (semi-hard negatives,
#: the monograph's way) into the three-input triplet graph; the others mine online inside P x K batches.
TRIPLET_MINING = ("offline", "batch_hard", "semi_hard", "batch_all")
#: Per-triplet loss forms (``kerasface.losses.get_triplet_loss``); the ``_squared`` forms compare squared distances.
TRIPLET_STACK_LOSSES = ("hinge_squared", "hinge", "difference_squared", "difference")


@dataclass(frozen=True)
class TripletExperiment(_Preset):
    """A triplet-loss embedding run (report 004, the FaceNet monograph).

    Training identities and evaluation pairs: with an LFW ``pairs.txt`` next to
    the data (10 person-disjoint folds), the pairs of ``holdout_folds`` are the
    evaluation list and every person named in them is left out of training;
    ``train_folds`` restricts training to the people of those folds (default:
    everyone else in the data). Without ``pairs.txt`` the evaluation list is
    ``pairsDevTest.txt`` or the bundled sample's ``pairsVal.txt`` (or
    ``eval_pairs``), and its people are left out of training the same way.
    Folds are numbered 1-10 as in the LFW documentation.
    """

    _FOLD_FIELDS = ("holdout_folds", "train_folds")

    name: str
    description: str = ""
    backbone: str = "facenet_nn2"
    # Data. ``data`` None = the bundled LFW sample in the repository's data/.
    data: str | None = None
    pairs: str | None = None  # folds list; None = pairs.txt next to the data when present
    eval_pairs: str | None = None  # explicit evaluation list (its people are left out of training)
    holdout_folds: tuple[int, ...] = (10,)
    train_folds: tuple[int, ...] | None = None  # None: every person not in a held-out fold
    min_images: int = 2  # training identities need at least this many images (a positive needs 2)
    image_size: int = 224
    center_crop: float = 1.0  # fraction of the shorter side kept before resizing
    on_error: str = "skip"  # unreadable/corrupt training images: skip (counted) or error
    # Model (NN2 options; other backbones get an L2-normalisation layer on top).
    embedding_dim: int = 128
    norm: str = "batch"  # NN2: batch | lrn
    l2_pooling: bool = True
    bn_momentum: float = 0.99
    group_conv: str = "auto"  # VarGFaceNet backbones only
    # Triplets.
    mining: str = "offline"
    loss: str = "hinge_squared"  # offline: the per-triplet loss; online: squared distances iff *_squared
    margin: float = 0.2
    selection_fallback: str = "skip"  # offline: anchor-positive pairs with no semi-hard negative
    max_triplets_per_chunk: int = 0  # offline: random subset of the selected triplets (0: all)
    # Chunks (the monograph's trunks) and batches.
    chunk_size: int = 8000
    images_per_identity: int = 40  # M: the most images of one identity in a chunk
    chunk_mode: str = "cover"  # cover: every image once an epoch | balanced
    k_images: int = 4  # online mining: K images per identity in a P x K batch, P = batch_size // K
    # Optimisation (Adam).
    epochs: int = 20
    batch_size: int = 80
    learning_rate: float = 1e-3
    seed: int = 0
    # Monitoring.
    probe_size: int = 64  # fixed training faces embedded after every epoch
    collapse_floor: float = 0.05  # stop when their mean pairwise distance falls below (0: never)
    verify_every: int = 0  # verification metrics on the evaluation pairs every N epochs (0: only at the end)
    # Output.
    out: str = "runs"

    def __post_init__(self):
        bad = self._bad

        if self.mining not in TRIPLET_MINING:
            bad(f"mining must be one of {', '.join(TRIPLET_MINING)}, got {self.mining!r}")
        if self.loss not in TRIPLET_STACK_LOSSES:
            bad(f"loss must be one of {', '.join(TRIPLET_STACK_LOSSES)}, got {self.loss!r}")
        if self.mining != "offline" and self.loss.startswith("difference"):
            bad(f"online mining ({self.mining}) uses a hinge; loss {self.loss!r} needs --mining offline")
        if self.selection_fallback not in ("skip", "hardest", "random"):
            bad(f"selection_fallback must be skip, hardest or random, got {self.selection_fallback!r}")
        if self.chunk_mode not in ("cover", "balanced"):
            bad(f"chunk_mode must be cover or balanced, got {self.chunk_mode!r}")
        self._check_identity_split()
        if not self.margin > 0:
            bad(f"margin must be positive, got {self.margin}")
        for field_name in ("image_size", "epochs", "batch_size", "chunk_size", "images_per_identity", "k_images",
                           "embedding_dim"):
            if getattr(self, field_name) < 1:
                bad(f"{field_name} must be positive, got {getattr(self, field_name)}")
        if self.mining != "offline" and self.batch_size < 2 * self.k_images:
            bad(f"batch_size {self.batch_size} holds fewer than 2 identities of k_images={self.k_images}")
        if self.min_images < 2:
            bad(f"min_images must be at least 2 (a positive needs two images), got {self.min_images}")

    @property
    def squared(self) -> bool:
        """Whether triplets compare squared distances (FaceNet's ``||a-p||^2 - ||a-n||^2 + margin``)."""
        return self.loss.endswith("_squared")


#: Training objectives of :class:`ClassifyExperiment`: a margin head over every training identity
#: (plain softmax, AM-softmax/CosFace, ArcFace), or the angular prototypical loss on N x M batches.
CLASSIFY_OBJECTIVES = ("margin", "angproto", "report002")
CLASSIFY_HEADS = ("softmax", "normalized", "amsoftmax", "cosface", "arcface")


@dataclass(frozen=True)
class ClassifyExperiment(_Preset):
    """An identity-classification or angular-prototypical run (reports 001 and 003).

    Training identities and evaluation pairs are chosen as in
    :class:`TripletExperiment` (LFW: the people of ``train_folds`` train, the
    pairs of ``holdout_folds`` are the EER/accuracy list and their people never
    train). Of every training identity with at least ``val_min_images`` images,
    ``val_fraction`` of the images (at least one) are held out: the
    classification accuracy of the margin objectives is measured on them
    (report 003's validation).

    ``objective="margin"``: backbone -> :class:`~kerasface.models.MarginHead`
    (``head``, ``scale``, ``margin``) over the training identities, sparse
    cross entropy; epochs draw at most ``max_per_identity`` images of each
    identity (report 001: 200). ``objective="angproto"``: batches of
    ``batch_size // m_images`` identities x ``m_images`` images, the angular
    prototypical loss (learnable scale and bias). ``init_from`` names a run
    folder whose ``model.keras`` (the embedding model) starts the backbone:
    report 001's fine-tuning of an AM-softmax pretraining.
    """

    _FOLD_FIELDS = ("holdout_folds", "train_folds")

    name: str
    description: str = ""
    backbone: str = "thin_resnet34"
    # BatchNormalization momentum of the backbone; None = its builder's default (FaceNet's 0.995 for
    # inception_resnet_v1, 0.997 for sqnxt23v5, 0.9 for the ResNets). Short runs need a faster one: at 0.995
    # the moving statistics still hold half their initial values after 140 steps.
    bn_momentum: float | None = None
    # Data. ``data`` None = the bundled LFW sample in the repository's data/.
    data: str | None = None
    pairs: str | None = None  # folds list; None = pairs.txt next to the data when present
    eval_pairs: str | None = None  # explicit evaluation list (its people are left out of training)
    holdout_folds: tuple[int, ...] = (10,)
    train_folds: tuple[int, ...] | None = None  # None: every person not in a held-out fold
    min_images: int = 2  # training identities need at least this many images
    val_fraction: float = 0.1  # held-out images per training identity, for classification accuracy
    val_min_images: int = 3  # only identities with at least this many images give validation images
    image_size: int = 112
    center_crop: float = 1.0  # fraction of the shorter side kept before resizing
    augment: str = "none"  # kerasface.data.augment.AUGMENTATIONS
    max_per_identity: int = 200  # margin objectives: images of one identity per epoch
    cache_mb: int = 2048  # decode the training images once into memory when they fit in this many MB
    on_error: str = "skip"  # unreadable/corrupt images: skip (counted) or error
    # Model and objective.
    objective: str = "margin"
    head: str = "amsoftmax"
    scale: float = 30.0
    margin: float = 0.1
    easy_margin: bool = False
    m_images: int = 2  # angproto: M images per identity in a batch (M - 1 support, 1 query)
    init_from: str | None = None  # a run folder (or .keras file) whose embedding model starts the backbone
    # Report 002 (objective="report002"): kerasface.models.Report002Model's loss weights (0 = term off).
    ce_weight: float = 1.0
    center_weight: float = 0.0
    center_alpha: float = 0.5
    prelogit_norm_weight: float = 0.0
    triplet_weight: float = 0.0  # > 0: batches of batch_size // m_images identities x m_images images
    triplet_margin: float = 0.2
    hard_mining_fraction: float = 1.0  # < 1: keep the hardest fraction of each batch's CE terms
    teacher: str | None = None  # run folder of a report002 run (its classifier.keras), frozen
    embedding_l2_weight: float = 0.0
    soft_ce_weight: float = 0.0
    hard_ce_weight: float = 0.0
    temperature: float = 4.0
    # Optimisation.
    optimizer: str = "adam"  # adam | adamw
    learning_rate: float = 1e-3
    weight_decay: float = 0.01  # adamw only
    schedule: str = "constant"  # constant | cosine_restarts
    cycle_epochs: float = 10.0  # cosine_restarts: first cycle length in epochs
    min_lr: float = 1e-5  # cosine_restarts: floor
    freeze_first: int = 0  # freeze the first N layers of the backbone for the whole run
    unfreeze_every: int = 0  # >0: start with only the head trainable, unfreeze one backbone stage every N epochs
    epochs: int = 60
    batch_size: int = 200
    seed: int = 0
    # Monitoring and output.
    verify_every: int = 1  # EER / accuracy on the evaluation pairs every N epochs (0: only at the end)
    out: str = "runs"

    def __post_init__(self):
        bad = self._bad

        from kerasface.data.augment import AUGMENTATIONS

        if self.objective not in CLASSIFY_OBJECTIVES:
            bad(f"objective must be one of {', '.join(CLASSIFY_OBJECTIVES)}, got {self.objective!r}")
        if self.head not in CLASSIFY_HEADS:
            bad(f"head must be one of {', '.join(CLASSIFY_HEADS)}, got {self.head!r}")
        if self.augment not in AUGMENTATIONS:
            bad(f"augment must be one of {', '.join(AUGMENTATIONS)}, got {self.augment!r}")
        if self.optimizer not in ("adam", "adamw"):
            bad(f"optimizer must be adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine_restarts"):
            bad(f"schedule must be constant or cosine_restarts, got {self.schedule!r}")
        self._check_identity_split()
        for f in ("image_size", "epochs", "batch_size", "max_per_identity", "min_images", "val_min_images"):
            if getattr(self, f) < 1:
                bad(f"{f} must be positive, got {getattr(self, f)}")
        if not 0.0 <= self.val_fraction < 1.0:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.bn_momentum is not None and not 0.0 <= self.bn_momentum < 1.0:
            bad(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if self.objective != "report002":
            if self.teacher:
                bad("--teacher needs objective report002")
        elif (self.embedding_l2_weight or self.soft_ce_weight or self.hard_ce_weight) and not self.teacher:
            bad("teacher-student terms (embedding_l2 / soft_ce / hard_ce weights) need --teacher RUN_DIR")
        if self.objective == "angproto" or (self.objective == "report002" and self.triplet_weight > 0):
            if self.m_images < 2:
                bad(f"m_images must be at least 2 (M - 1 support images and 1 query), got {self.m_images}")
            if self.batch_size < 2 * self.m_images:
                bad(f"batch_size {self.batch_size} holds fewer than 2 identities of m_images={self.m_images}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            bad("learning_rate must be positive and min_lr non-negative")
        if self.freeze_first < 0 or self.unfreeze_every < 0:
            bad("freeze_first and unfreeze_every must be >= 0")
        if self.unfreeze_every and self.objective != "margin":
            bad("unfreeze_every works with objective margin only")

    @property
    def identities_per_batch(self) -> int:
        """angproto (and report002 with a triplet term): N = batch_size // m_images."""
        return self.batch_size // self.m_images

    @property
    def identity_batches(self) -> bool:
        """Whether batches are N identities x M images (else capped random batches)."""
        return self.objective == "angproto" or (self.objective == "report002" and self.triplet_weight > 0)


def upgrade_settings(settings: dict) -> dict:
    """A run folder's stored ``config.json`` settings in today's spelling.

    Settings renamed since a run folder was written are mapped to their current
    names and values here, so that an older run folder still resumes with the same
    command. Unknown keys are left as they are.
    """
    return dict(settings)
