"""Named, frozen presets: one per experiment of the source reports.

A preset is a frozen dataclass; command-line flags override its fields with
:func:`dataclasses.replace`, and the resolved preset is written to the run
folder as ``config.json``. ``kerasface presets`` lists them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PairExperiment",
    "PAIR_PRESETS",
    "get_pair_preset",
    "TripletExperiment",
    "TRIPLET_PRESETS",
    "get_triplet_preset",
    "bundled_sample_dir",
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
        def bad(msg):
            raise ValueError(f"preset {self.name!r}: {msg}")

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
        if self.on_error not in ("skip", "error"):
            bad(f"on_error must be skip or error, got {self.on_error!r}")
        if not self.margin > 0:
            bad(f"margin must be positive, got {self.margin}")
        for field_name in ("image_size", "epochs", "batch_size", "chunk_size", "images_per_identity", "k_images",
                           "embedding_dim"):
            if getattr(self, field_name) < 1:
                bad(f"{field_name} must be positive, got {getattr(self, field_name)}")
        if self.mining != "offline" and self.batch_size < 2 * self.k_images:
            bad(f"batch_size {self.batch_size} holds fewer than 2 identities of k_images={self.k_images}")
        if not 0.0 < self.center_crop <= 1.0:
            bad(f"center_crop must be in (0, 1], got {self.center_crop}")
        if self.min_images < 2:
            bad(f"min_images must be at least 2 (a positive needs two images), got {self.min_images}")
        for folds_name in ("holdout_folds", "train_folds"):
            folds = getattr(self, folds_name)
            if folds is not None and (not folds or any(int(f) < 1 for f in folds)):
                bad(f"{folds_name} are numbered from 1, got {folds}")
        if self.train_folds and set(self.train_folds) & set(self.holdout_folds):
            bad(f"train_folds {self.train_folds} overlap holdout_folds {self.holdout_folds}")

    @property
    def squared(self) -> bool:
        """Whether triplets compare squared distances (FaceNet's ``||a-p||^2 - ||a-n||^2 + margin``)."""
        return self.loss.endswith("_squared")



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


def bundled_sample_dir() -> Path:
    """The small real LFW sample shipped in the repository's ``data/lfw_sample``."""
    candidates = [
        Path(__file__).resolve().parents[1] / "data" / "lfw_sample",
        Path.cwd() / "data" / "lfw_sample",
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        "the bundled LFW sample (data/lfw_sample) was not found; run from the repository "
        "checkout or pass --data /path/to/lfw.zip (or an LFW folder)"
    )
