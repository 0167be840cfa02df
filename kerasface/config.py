"""The settings schema of the three trainers: one frozen dataclass per kind of run.

A run's settings are a :class:`PairExperiment` (Siamese pair verification),
:class:`TripletExperiment` (triplet-loss embedding) or :class:`ClassifyExperiment`
(classification / angular prototypical / distillation). Named presets over these
schemas live in :mod:`kerasface.presets`; command-line flags override their fields
with :meth:`~Settings.override`, and the resolved settings are written to the run
folder as ``config.json``.

Every field is declared once, with :func:`setting`: its default, help text,
choices and range. The metadata drives the validation (:meth:`Settings.__post_init__`)
and the command line (:mod:`kerasface.cli.flags` generates one flag per field).
Settings renamed since an older run folder was written are mapped back by
:func:`upgrade_settings`. This module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass

__all__ = [
    "AUGMENTATIONS",
    "CLASSIFY_HEADS",
    "CLASSIFY_OBJECTIVES",
    "GROUP_CONV_PATHS",
    "PAIR_AUGMENTATIONS",
    "SETTING_GROUPS",
    "TRIPLET_MINING",
    "TRIPLET_STACK_LOSSES",
    "ClassifyExperiment",
    "PairExperiment",
    "SettingInfo",
    "Settings",
    "TripletExperiment",
    "COMMAND_SETTINGS",
    "check_command_setting",
    "setting",
    "setting_info",
    "upgrade_settings",
]

#: Grouped-convolution implementations of the VarGFaceNet backbones.
GROUP_CONV_PATHS = ("auto", "native", "depthwise", "split", "blockdiag", "matmul")
#: Augmentation policies of the classification trainer: the names of
#: ``kerasface.data.augment.AUGMENTATIONS``, here without importing TensorFlow (a test keeps them equal).
AUGMENTATIONS = ("none", "report001-crop", "report001-jitter", "report001-both", "report003", "basic",
                 "basic-seaweed")
#: Augmentation of the pair trainer: none, or an independent random horizontal flip of each face.
PAIR_AUGMENTATIONS = ("none", "flip")
#: Triplet selection: "offline" = FaceNet's selection within each decoded chunk (semi-hard negatives,
#: the monograph's way) into the three-input triplet graph; the others mine online inside P x K batches.
TRIPLET_MINING = ("offline", "batch_hard", "semi_hard", "batch_all")
#: Per-triplet loss forms (``kerasface.losses.get_triplet_loss``); the ``_squared`` forms compare squared distances.
TRIPLET_STACK_LOSSES = ("hinge_squared", "hinge", "difference_squared", "difference")
#: Training objectives of :class:`ClassifyExperiment`: a margin head over every training identity
#: (plain softmax, AM-softmax/CosFace, ArcFace), the angular prototypical loss on N x M batches, or
#: a classifier with extra loss terms and an optional frozen teacher (distillation).
CLASSIFY_OBJECTIVES = ("margin", "angproto", "distillation")
CLASSIFY_HEADS = ("softmax", "normalized", "amsoftmax", "cosface", "arcface")
_SKIP_OR_ERROR = ("skip", "error")
#: Centre-loss forms (``kerasface.losses.center.CENTER_UPDATES``; a test keeps them equal).
CENTER_UPDATES = ("wen", "sandberg")
_DISTILL = "distillation terms (objective distillation; a weight of 0 turns a term off)"
#: The groups of the settings (argument groups of the command line), in this order.
SETTING_GROUPS = ("data", "model", "triplets", _DISTILL, "optimisation", "output")

_KEY = "kerasface"


@dataclass(frozen=True)
class SettingInfo:
    """What :func:`setting` records about a field (``dataclasses.field(...).metadata["kerasface"]``).

    ``minimum`` / ``maximum`` are inclusive bounds, ``above`` / ``below`` exclusive ones; ``flag`` is
    the command-line spelling (default ``--field-name``; ``None`` for fields without a flag), ``aliases``
    older spellings that still work and print a deprecation message; ``renamed_values`` maps values of
    an older release to today's (accepted with a deprecation message); ``renamed_from`` is the field's
    name in older run folders; ``bare`` is the value of a deprecated bare flag (``--augment`` = flip);
    ``folds``: a tuple of fold numbers (JSON list in ``config.json``, parsed from ``1-9,10``).
    """

    help: str
    group: str = "settings"
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    flag: str | None = ""
    aliases: tuple = ()
    metavar: str | None = None
    renamed_values: dict | None = None
    renamed_from: str | None = None
    bare: str | None = None
    folds: bool = False

    def describe_range(self) -> str:
        """``"in (0, 1]"``, ``">= 1"``, ``"> 0"`` or ``""`` (no range)."""
        lo = "(" if self.above is not None else "[" if self.minimum is not None else None
        hi = ")" if self.below is not None else "]" if self.maximum is not None else None
        low = self.above if self.above is not None else self.minimum
        high = self.below if self.below is not None else self.maximum
        if lo and hi:
            return f"in {lo}{low:g}, {high:g}{hi}"
        if lo:
            return f"{'>' if lo == '(' else '>='} {low:g}"
        if hi:
            return f"{'<' if hi == ')' else '<='} {high:g}"
        return ""

    def renamed_value(self, value):
        """Today's value for ``value`` when it is an older release's spelling (``renamed_values``), else None."""
        for old, new in (self.renamed_values or {}).items():
            if type(value) is type(old) and value == old:
                return new
        return None

    def in_range(self, value) -> bool:
        """Within the bounds; a NaN or infinite number is never in a declared range."""
        if isinstance(value, float) and not math.isfinite(value) and self.describe_range():
            return False
        return not ((self.minimum is not None and value < self.minimum)
                    or (self.maximum is not None and value > self.maximum)
                    or (self.above is not None and value <= self.above)
                    or (self.below is not None and value >= self.below))


def setting(default=dataclasses.MISSING, *, help: str, group: str = "settings", choices=None, minimum=None,
            maximum=None, above=None, below=None, flag: str | None = "", aliases=(), metavar=None,
            renamed_values=None, renamed_from=None, bare=None, folds=False):
    """A schema field: ``dataclasses.field(default=...)`` with its :class:`SettingInfo` as metadata."""
    info = SettingInfo(help=help, group=group, choices=tuple(choices) if choices else None, minimum=minimum,
                       maximum=maximum, above=above, below=below, flag=flag, aliases=tuple(aliases),
                       metavar=metavar, renamed_values=renamed_values, renamed_from=renamed_from, bare=bare,
                       folds=folds)
    return dataclasses.field(default=default, metadata={_KEY: info})


def setting_info(field: dataclasses.Field) -> SettingInfo:
    """The :class:`SettingInfo` of a schema field."""
    return field.metadata[_KEY]


def _command_setting(help: str, **bounds) -> SettingInfo:
    return setting_info(setting(help=help, **bounds))


#: The numeric flags of the commands that take no preset (evaluate, align, pack, verify, embed, find),
#: declared here with their ranges like the schema's fields, so that every command refuses the same values
#: with the same words (:func:`check_command_setting`; ``kerasface.cli.flags.ranged`` turns them into flag
#: types).
COMMAND_SETTINGS = {
    "image_size": _command_setting("input side in pixels", minimum=1),
    "center_crop": _command_setting("fraction of the shorter side kept", above=0.0, maximum=1.0),
    "batch_size": _command_setting("images per batch", minimum=1),
    "cases": _command_setting("pairs of each kind drawn", minimum=0),
    "jpeg_quality": _command_setting("JPEG quality", minimum=1, maximum=100),
    "limit": _command_setting("first N images only", minimum=1),
    "shards": _command_setting("shard files", minimum=1),
    "workers": _command_setting("decoding threads", minimum=1),
    "min_images": _command_setting("fewest images of an identity", minimum=1),
    "grid_n": _command_setting("faces drawn", minimum=1),
    "min_confidence": _command_setting("lowest detector confidence of a face kept", minimum=0.0, maximum=1.0),
    "every": _command_setting("photos between saves of an unfinished run", minimum=1),
    "top": _command_setting("matches listed", minimum=1),
}


def check_command_setting(name: str, value, flag: str | None = None):
    """``value`` when it is in the range of ``COMMAND_SETTINGS[name]``; ``ValueError`` naming the flag
    otherwise (a NaN or infinite number is never in range)."""
    info = COMMAND_SETTINGS[name]
    if value is not None and not info.in_range(value):
        raise ValueError(f"{flag or '--' + name.replace('_', '-')} must be {info.describe_range()}, got {value}")
    return value


class Settings:
    """What every settings dataclass shares: validation from the field metadata, ``to_dict``, ``override``.

    Subclasses add their cross-field rules in :meth:`check`.
    """

    def __post_init__(self):
        for f in dataclasses.fields(self):
            info = setting_info(f)
            value = getattr(self, f.name)
            new = info.renamed_value(value)
            if new is not None:
                warnings.warn(f"{f.name}={value!r} is deprecated; use {new!r}", DeprecationWarning, stacklevel=3)
                object.__setattr__(self, f.name, new)
                value = new
            if info.folds and value is not None:
                object.__setattr__(self, f.name, tuple(int(x) for x in value))
            elif value is not None:
                self._check_value(f.name, value, info)
        self.check()

    def _check_value(self, name: str, value, info: SettingInfo) -> None:
        if info.choices is not None and value not in info.choices:
            self._bad(f"{name} must be one of {', '.join(map(str, info.choices))}, got {value!r}")
        if info.describe_range() and not info.in_range(value):
            self._bad(f"{name} must be {info.describe_range()}, got {value}")

    def check(self) -> None:
        """Rules between fields (the per-field choices and ranges are checked from the metadata)."""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if setting_info(f).folds and d[f.name] is not None:
                d[f.name] = list(d[f.name])
        return d

    def _bad(self, msg):
        raise ValueError(f"preset {self.name!r}: {msg}")

    def _check_identity_split(self) -> None:
        """Fold rules shared by the settings that pick training identities by fold (triplet, classification)."""
        for folds_name in ("holdout_folds", "train_folds"):
            folds = getattr(self, folds_name)
            if folds is not None and (not folds or any(int(f) < 1 for f in folds)):
                self._bad(f"{folds_name} are numbered from 1, got {folds}")
        if self.train_folds and set(self.train_folds) & set(self.holdout_folds):
            self._bad(f"train_folds {self.train_folds} overlap holdout_folds {self.holdout_folds}")

    def override(self, **changes):
        """A copy with ``changes`` applied; ``None`` values are ignored; unknown keys raise."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise ValueError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def field_types(cls) -> dict:
        """``{field name: its type}`` with ``X | None`` reduced to ``X`` (what a flag parses)."""
        hints = typing.get_type_hints(cls)
        out = {}
        for f in dataclasses.fields(cls):
            t = hints[f.name]
            args = [a for a in typing.get_args(t) if a is not type(None)]
            out[f.name] = args[0] if typing.get_origin(t) in (typing.Union, _UnionType) and len(args) == 1 else t
        return out


_UnionType = type(int | None)


# --- fields shared by several schemas (each declared once, here) --------------------------------

def _name():
    return setting(help="preset name (chosen with --preset; names the run folder)", flag=None)


def _description():
    return setting("", help="one-line description of the preset", flag=None)


def _data():
    return setting(None, group="data", help="LFW folder or zip, any <identity>/<image> tree, or a path,label file "
                                            "list (default: the bundled sample data/lfw_sample)")


def _image_size(default: int):
    return setting(default, group="data", minimum=1, help="input side in pixels")


def _center_crop():
    return setting(1.0, group="data", above=0.0, maximum=1.0,
                   help="fraction of the image's shorter side kept before resizing (1.0: the whole image)")


def _on_corrupt(what: str):
    return setting("skip", group="data", choices=_SKIP_OR_ERROR, flag="--on-corrupt",
                   help=f"an undecodable image: skip {what} (counted, logged) or stop")


def _group_conv():
    return setting("auto", group="model", choices=GROUP_CONV_PATHS,
                   help="grouped-convolution implementation of the VarGFaceNet backbones")


def _init_from():
    return setting(None, group="model", metavar="RUN_DIR",
                   help="start the backbone from this run folder's model.keras (or a .keras file)")


def _epochs(default: int):
    return setting(default, group="optimisation", minimum=1, help="training epochs")


def _learning_rate(default: float = 1e-3):
    return setting(default, group="optimisation", above=0.0, help="learning rate")


def _seed():
    return setting(0, group="optimisation", help="random seed (data order, initial weights)")


def _verify_every(default: int):
    return setting(default, group="output", minimum=0,
                   help="verification metrics (accuracy, AUC, EER) on the evaluation pairs every N epochs "
                        "(0: at the end only)")


def _out():
    return setting("runs", group="output", help="parent folder of the run folders")


def _identity_split_fields(min_images: int, fewest: int, min_images_help: str) -> dict:
    """pairs / eval_pairs / holdout_folds / train_folds / min_images: the identity split by fold."""
    return {
        "pairs": setting(None, group="data", help="LFW folds list (default: pairs.txt next to --data when present)"),
        "eval_pairs": setting(None, group="data", help="evaluate on this pairs list instead of held-out folds "
                                                    "(its people are left out of training); default without "
                                                    "pairs.txt: pairsDevTest.txt, else pairsVal.txt"),
        "holdout_folds": setting((10,), group="data", folds=True, metavar="FOLDS",
                              help="folds whose pairs are evaluated and whose people never train (e.g. 9,10)"),
        "train_folds": setting(None, group="data", folds=True, metavar="FOLDS",
                            help="train only on the people of these folds (e.g. 1-9; default: everyone not "
                                 "held out)"),
        "min_images": setting(min_images, group="data", minimum=fewest, help=min_images_help),
    }


@dataclass(frozen=True)
class PairExperiment(Settings):
    """A Siamese pair-verification run (report 000)."""

    name: str = _name()
    description: str = _description()
    backbone: str = setting("vargfacenet", group="model", help="backbone name (see `kerasface summary --list`)")
    data: str | None = _data()
    train_pairs: str | None = setting(None, group="data", help="training pairs list (default: pairs.txt, else "
                                                               "pairsTrain.txt next to --data)")
    eval_pairs: str | None = setting(None, group="data", aliases=("--val-pairs",), renamed_from="val_pairs",
                                     help="evaluation (validation) pairs list: validation loss and accuracy, "
                                          "verification metrics (default: pairsDevTest.txt, else pairsVal.txt)")
    holdout_folds: tuple[int, ...] | None = setting(
        None, group="data", folds=True, metavar="FOLDS",
        help="validate on these folds of the training list (a folds list such as pairs.txt) and train on the "
             "other folds' pairs; LFW's folds are person-disjoint (default: off, validation on --eval-pairs)")
    image_size: int = _image_size(112)
    center_crop: float = _center_crop()
    low_light: bool = setting(False, group="data", help="darken every image with the seeded low-light transform")
    low_light_seed: int = setting(1234, group="data", help="seed of the low-light transform")
    augment: str = setting("none", group="data", choices=PAIR_AUGMENTATIONS, bare="flip",
                           renamed_values={False: "none", True: "flip"},
                           help="augmentation policy: none, or flip (random horizontal flip of each face)")
    on_missing: str = setting("skip", group="data", choices=_SKIP_OR_ERROR,
                              help="a pair naming a missing image: skip it (reported) or stop")
    on_error: str = _on_corrupt("its pairs")
    hidden_units: int = setting(64, group="model", minimum=1, help="units of the verifier's hidden layer")
    dropout: float = setting(0.5, group="model", minimum=0.0, below=1.0, help="dropout rate before the verdict")
    group_conv: str = _group_conv()
    init_from: str | None = _init_from()
    freeze_backbone: bool = setting(False, group="optimisation",
                                    help="train the verifier's head only, the backbone (from --init-from) frozen, "
                                         "its BatchNorm in inference mode")
    epochs: int = _epochs(20)
    batch_size: int = setting(32, group="optimisation", minimum=1, help="pairs per step")
    learning_rate: float = _learning_rate()
    seed: int = _seed()
    verify_every: int = _verify_every(0)
    out: str = _out()

    def check(self):
        if self.freeze_backbone and not self.init_from:
            self._bad("--freeze-backbone needs --init-from (a frozen random backbone learns nothing)")


_TRIPLET_SPLIT = _identity_split_fields(2, 2, "training identities need at least this many images (a positive "
                                                "needs 2)")


@dataclass(frozen=True)
class TripletExperiment(Settings):
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

    name: str = _name()
    description: str = _description()
    backbone: str = setting("facenet_nn2", group="model", help="backbone name (see `kerasface summary --list`); "
                                                              "non-NN2 backbones get an L2 normalisation on top")
    data: str | None = _data()
    pairs: str | None = _TRIPLET_SPLIT["pairs"]
    eval_pairs: str | None = _TRIPLET_SPLIT["eval_pairs"]
    holdout_folds: tuple[int, ...] = _TRIPLET_SPLIT["holdout_folds"]
    train_folds: tuple[int, ...] | None = _TRIPLET_SPLIT["train_folds"]
    min_images: int = _TRIPLET_SPLIT["min_images"]
    image_size: int = _image_size(224)
    center_crop: float = _center_crop()
    on_error: str = _on_corrupt("it")
    embedding_dim: int = setting(128, group="model", minimum=1, help="embedding size")
    norm: str = setting("batch", group="model", choices=("batch", "lrn", "none"),
                        help="NN2 normalisation: BN after every conv (the report's fix), the paper's LRN, or none")
    l2_normalize: bool = setting(True, group="model",
                                 help="the final L2 normalisation of the embedding (--no-l2-normalize: removed, "
                                      "one of report 004's fixes)")
    distance_epsilon: float = setting(1e-12, group="triplets", above=0.0,
                                      help="floor of the squared distance under the square root (report 004's "
                                           "Keras K.epsilon() 1e-7 gives the sqrt(1e-7) = 3.1622776e-04 it printed)")
    l2_pooling: bool = setting(True, group="model", help="NN2: L2 pooling where the table says L2 "
                                                         "(--no-l2-pooling: max pooling)")
    bn_momentum: float = setting(0.99, group="model", minimum=0.0, below=1.0, help="BatchNormalization momentum")
    group_conv: str = _group_conv()
    mining: str = setting("offline", group="triplets", choices=TRIPLET_MINING,
                          help="offline: FaceNet's semi-hard selection within each chunk into the triplet graph; "
                               "batch_hard / semi_hard / batch_all: online mining in P x K batches")
    loss: str = setting("hinge_squared", group="triplets", choices=TRIPLET_STACK_LOSSES,
                        help="per-triplet loss (offline); online mining uses squared distances iff *_squared")
    margin: float = setting(0.2, group="triplets", above=0.0,
                            help="hinge margin (FaceNet's 0.2, on squared distances)")
    selection_fallback: str = setting("skip", group="triplets", choices=("skip", "hardest", "random"),
                                      help="offline: an anchor-positive pair without a semi-hard negative")
    max_triplets_per_chunk: int = setting(0, group="triplets", minimum=0,
                                          help="offline: train on a random subset of at most this many selected "
                                               "triplets per chunk (0: all)")
    chunk_size: int = setting(8000, group="triplets", minimum=1,
                              help="images decoded at once (the report's trunks: 8000 / 1000)")
    images_per_identity: int = setting(40, group="triplets", minimum=1,
                                       help="the most images of one identity in a chunk")
    chunk_mode: str = setting("cover", group="triplets", choices=("cover", "balanced"),
                              help="cover: every image once an epoch; balanced: identities drawn evenly")
    k_images: int = setting(4, group="triplets", minimum=1,
                            help="online mining: K images per identity in a P x K batch (P = batch size // K)")
    epochs: int = _epochs(20)
    batch_size: int = setting(80, group="optimisation", minimum=1,
                              help="triplets per step (offline) or P x K images (online)")
    learning_rate: float = _learning_rate()
    seed: int = _seed()
    probe_size: int = setting(64, group="output", minimum=1, help="fixed training faces embedded after each epoch")
    collapse_floor: float = setting(0.05, group="output", minimum=0.0,
                                    help="stop when the probe faces' mean distance falls below this (0: never)")
    verify_every: int = _verify_every(0)
    out: str = _out()

    def check(self):
        if self.mining != "offline" and self.loss.startswith("difference"):
            self._bad(f"online mining ({self.mining}) uses a hinge; loss {self.loss!r} needs --mining offline")
        self._check_identity_split()
        if self.mining != "offline" and self.batch_size < 2 * self.k_images:
            self._bad(f"batch_size {self.batch_size} holds fewer than 2 identities of k_images={self.k_images}")

    @property
    def squared(self) -> bool:
        """Whether triplets compare squared distances (FaceNet's ``||a-p||^2 - ||a-n||^2 + margin``)."""
        return self.loss.endswith("_squared")


_CLASSIFY_SPLIT = _identity_split_fields(2, 1, "training identities need at least this many images")


@dataclass(frozen=True)
class ClassifyExperiment(Settings):
    """An identity-classification, angular-prototypical or distillation run (reports 001, 002, 003).

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
    ``objective="distillation"`` (formerly ``"report002"``): a classifier with
    the weighted extra terms below, and with ``teacher`` a frozen teacher.
    """

    name: str = _name()
    description: str = _description()
    backbone: str = setting("thin_resnet34", group="model", help="backbone name (see `kerasface summary --list`)")
    # At 0.995 the moving statistics still hold half their initial values after 140 steps.
    bn_momentum: float | None = setting(None, group="model", minimum=0.0, below=1.0,
                                        help="BatchNormalization momentum of the backbone (default: the builder's, "
                                             "e.g. 0.995 for inception_resnet_v1, 0.9 for the ResNets; 0.99 or "
                                             "lower for runs of a few hundred steps)")
    dropout: float | None = setting(None, group="model", minimum=0.0, below=1.0,
                                    help="dropout rate on the backbone's pooled features, for backbones that have "
                                         "one (sqnxt23v5*, inception_resnet_v1*; default: the builder's, 0.2)")
    data: str | None = _data()
    pairs: str | None = _CLASSIFY_SPLIT["pairs"]
    eval_pairs: str | None = _CLASSIFY_SPLIT["eval_pairs"]
    holdout_folds: tuple[int, ...] = _CLASSIFY_SPLIT["holdout_folds"]
    train_folds: tuple[int, ...] | None = _CLASSIFY_SPLIT["train_folds"]
    min_images: int = _CLASSIFY_SPLIT["min_images"]
    val_fraction: float = setting(0.1, group="data", minimum=0.0, below=1.0,
                                  help="held-out images of each training identity for classification accuracy")
    val_min_images: int = setting(3, group="data", minimum=1,
                                  help="only identities with this many images give held-out images")
    image_size: int = _image_size(112)
    center_crop: float = _center_crop()
    augment: str = setting("none", group="data", choices=AUGMENTATIONS,
                           help="augmentation policy (docs/augmentation.md)")
    augment_fixed_set: bool | None = setting(
        None, group="data",
        help="with --augment report003: each epoch is report 003's fixed 6x set, every training image once as it "
             "is and once through each of the five transforms, shuffled (default: one of the six drawn per image)")
    flip: bool | None = setting(None, group="data",
                                help="mirror each training face with probability 0.5; with --embedding-teacher the "
                                     "target is the teacher's embedding of the mirrored chip (default: off)")
    max_per_identity: int = setting(200, group="data", minimum=1,
                                    help="margin objectives: images of one identity per epoch (report 001: 200)")
    cache_mb: int = setting(2048, group="data", minimum=0,
                            help="decode all faces into memory when they fit in this many MB")
    on_error: str = _on_corrupt("it")
    objective: str = setting("margin", group="model", choices=CLASSIFY_OBJECTIVES,
                             renamed_values={"report002": "distillation"},
                             help="margin: a margin head over the identities; angproto: the angular prototypical "
                                  "loss; distillation: extra terms and an optional teacher")
    head: str = setting("amsoftmax", group="model", choices=CLASSIFY_HEADS, help="margin head kind")
    scale: float = setting(30.0, group="model", above=0.0, help="margin head scale s")
    margin: float = setting(0.1, group="model", help="margin m")
    easy_margin: bool = setting(False, group="model", help="ArcFace easy margin")
    m_images: int = setting(2, group="model", minimum=1,
                            help="angproto (and a distillation triplet term): M images per identity in a batch")
    embedding_layers: int = setting(1, group="model", minimum=1,
                                    help="linear layers between the pooled features and the classifier: 1 (the "
                                         "backbone's embedding; report 003's choice) or a stack (ReLU between)")
    pretrained: str | None = setting(None, group="model", choices=("imagenet",),
                                     help="start a keras.applications backbone (resnet50, efficientnet_b0, "
                                          "efficientnet_v2_m) from Keras's ImageNet weights (downloaded once to "
                                          "~/.keras/models; default: from scratch)")
    init_from: str | None = _init_from()
    ce_weight: float = setting(1.0, group=_DISTILL, minimum=0.0, help="cross entropy with the labels")
    center_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--center-loss", help="centre loss weight")
    center_alpha: float = setting(0.5, group=_DISTILL, minimum=0.0, maximum=1.0,
                                  help="centre update rate (center_update sandberg: the share of the old centre "
                                       "kept, report 002: 0.95)")
    center_update: str = setting("wen", group=_DISTILL, choices=CENTER_UPDATES,
                                 help="centre loss form: wen (0.5 mean squared distance, Wen et al.'s update) or "
                                      "sandberg (mean over batch and dimensions, update (1 - alpha)(c - x) summed "
                                      "per class: davidsandberg/facenet, report 002's code)")
    prelogit_norm_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--prelogit-norm",
                                          help="pre-logit norm loss weight")
    triplet_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--triplet",
                                    help="batch-hard triplet weight (> 0: N identities x --m-images batches)")
    triplet_margin: float = setting(0.2, group=_DISTILL, above=0.0, help="margin of the batch-hard triplet term")
    triplet_embedding_dim: int = setting(0, group=_DISTILL, minimum=0,
                                         help="triplet term on a separate linear embedding of this size (report "
                                              "002's code: 128); 0: on the model's embedding")
    triplet_normalize: bool = setting(True, group=_DISTILL,
                                      help="L2-normalise what the triplet term reads (--no-triplet-normalize: "
                                           "raw euclidean distances, report 002's code)")
    triplet_average: str = setting("valid", group=_DISTILL, choices=("valid", "all"),
                                   help="batch-hard mean over anchors with a positive and a negative (valid) or "
                                        "over every anchor, a missing positive at distance 0 (all: report 002's "
                                        "code)")
    triplet_batches: str = setting("identities", group=_DISTILL, choices=("identities", "random"),
                                   help="with a triplet term: N identities x --m-images batches, or the capped "
                                        "random batches of the other runs (report 002's code)")
    hard_mining_fraction: float = setting(1.0, group=_DISTILL, above=0.0, maximum=1.0, flag="--hard-mining",
                                          help="hard instance mining: keep this hardest fraction of each batch's "
                                               "cross-entropy terms (1 = off)")
    hard_mining_threshold: float = setting(0.0, group=_DISTILL, minimum=0.0, below=1.0,
                                           help="hard instance mining by threshold: cross-entropy terms below this "
                                                "x the batch maximum are multiplied by it (report 002's code: 0.7; "
                                                "0 = off)")
    loss_sum: str = setting("once", group=_DISTILL, choices=("once", "doubling"),
                            help="once: each term added once; doubling: report 002's code (total = 2 x total + "
                                 "term for pre-logit norm, centre, triplet in turn: 8 CE + 4 PLN + 2 centre + "
                                 "triplet with all on)")
    teacher: str | None = setting(None, group=_DISTILL, metavar="RUN_DIR",
                                  help="teacher run folder (its classifier.keras), frozen")
    embedding_l2_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--embedding-l2",
                                         help="teacher-student: student-teacher embedding L2")
    soft_ce_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--soft-ce",
                                    help="teacher-student: soft cross entropy at --temperature")
    soft_ce_kind: str = setting("kl", group=_DISTILL, choices=("kl", "ce", "ce_eps"),
                                help="soft cross entropy form: T^2 KL, T^2 CE, or CE with log(q + 1e-6) (report "
                                     "002's train_TS.py)")
    projected_soft_ce_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--projected-soft-ce",
                                              help="teacher-student: soft cross entropy of a classifier on the "
                                                   "projected student embedding (report 002's s_embed_CE)")
    embedding_l2_reduction: str = setting("sum", group=_DISTILL, choices=("sum", "mean"),
                                          help="embedding L2: sum over the dimensions (squared distance) or mean "
                                               "(report 002's train_TS.py)")
    projection_bias: bool = setting(False, group=_DISTILL,
                                    help="bias in the student -> teacher embedding projection (report 002's: yes)")
    hard_ce_weight: float = setting(0.0, group=_DISTILL, minimum=0.0, flag="--hard-ce",
                                    help="teacher-student: cross entropy with the teacher's argmax")
    temperature: float = setting(4.0, group=_DISTILL, above=0.0, help="teacher-student: softmax temperature")
    embedding_teacher: str | None = setting(
        None, group=_DISTILL, metavar="MODEL",
        help="frozen embedding teacher of --embedding-distill: a pretrained name (dlib-resnet-v1), a .keras file or "
             "a run folder; its embeddings are computed once per image (and per mirror with --flip) and cached "
             "in the run folder (teacher_embeddings.npy)")
    teacher_data: str | None = setting(
        None, group="data", metavar="DIR",
        help="the embedding teacher's own face chips of the same images, at the same relative paths as --data "
             "(e.g. `kerasface align SRC DST --template dlib --size 150` for dlib-resnet-v1; default: --data's "
             "images resized to the teacher's input)")
    # the settings added after run folders of earlier releases were written default to None (= off / the
    # default), so that those folders, which lack them, still resume with the same command
    embedding_distill_weight: float | None = setting(None, group=_DISTILL, minimum=0.0, flag="--embedding-distill",
                                                     help="teacher-student: unit student embedding regressing the "
                                                          "--embedding-teacher's unit embedding (default: off)")
    embedding_distill_center: bool = setting(False, group=_DISTILL,
                                             help="--embedding-distill: the targets are the teacher's embeddings "
                                                  "centred on their mean over the training images, renormalised "
                                                  "(for teachers whose embeddings share one strong direction, "
                                                  "like dlib-resnet-v1)")
    embedding_distill_metric: str | None = setting(None, group=_DISTILL, choices=("cosine", "l2"),
                                                   help="--embedding-distill per image: 1 - cosine (default), or "
                                                        "the squared L2 distance of the unit vectors (= 2 x cosine)")
    distill_projection: str = setting("auto", group=_DISTILL, choices=("auto", "always"),
                                      help="--embedding-distill: a learned bias-free Dense onto the teacher's "
                                           "embedding size after the student's embedding when the sizes differ "
                                           "(auto), or always: for students whose embedding is non-negative "
                                           "(pooled ReLU features, e.g. SqNxt-23v5) and cannot point where a "
                                           "teacher's signed embedding does")
    optimizer: str = setting("adam", group="optimisation", choices=("adam", "adamw"), help="optimizer")
    learning_rate: float = _learning_rate()
    weight_decay: float = setting(0.01, group="optimisation", minimum=0.0, help="AdamW weight decay")
    schedule: str = setting("constant", group="optimisation",
                            choices=("constant", "cosine_restarts", "exponential_staircase"),
                            help="learning-rate schedule (exponential_staircase: times --decay-rate every "
                                 "--decay-steps steps)")
    decay_steps: int = setting(10000, group="optimisation", minimum=1,
                               help="exponential_staircase: optimizer steps per decay")
    decay_rate: float = setting(0.9, group="optimisation", above=0.0, maximum=1.0,
                                help="exponential_staircase: factor per decay")
    cycle_epochs: float = setting(10.0, group="optimisation", above=0.0,
                                  help="cosine_restarts: first cycle length in epochs")
    min_lr: float = setting(1e-5, group="optimisation", minimum=0.0, help="cosine_restarts: minimum learning rate")
    freeze_first: int = setting(0, group="optimisation", minimum=0,
                                help="freeze the first N backbone layers for the whole run")
    unfreeze_every: int = setting(0, group="optimisation", minimum=0,
                                  help="start with the head and the top stage trainable; unfreeze the next stage "
                                       "every N epochs (margin objective only)")
    epochs: int = _epochs(60)
    batch_size: int = setting(200, group="optimisation", minimum=1, help="images per step")
    seed: int = _seed()
    verify_every: int = _verify_every(1)
    out: str = _out()

    def check(self):
        bad = self._bad
        self._check_identity_split()
        if self.objective != "distillation":
            if self.teacher:
                bad("--teacher needs --objective distillation (the former objective report002)")
        elif (self.embedding_l2_weight or self.soft_ce_weight or self.hard_ce_weight
              or self.projected_soft_ce_weight) and not self.teacher:
            bad("teacher-student terms (embedding_l2 / soft_ce / projected_soft_ce / hard_ce weights) need "
                "--teacher RUN_DIR")
        if self.hard_mining_threshold > 0 and self.hard_mining_fraction < 1:
            bad("hard_mining_threshold and hard_mining_fraction < 1 are two mining rules; pick one")
        if self.embedding_teacher and self.objective != "distillation":
            bad("--embedding-teacher needs --objective distillation")
        if self.embedding_distill_weight and not self.embedding_teacher:
            bad("--embedding-distill needs --embedding-teacher (a pretrained name, .keras file or run folder)")
        if self.teacher_data and not self.embedding_teacher:
            bad("--teacher-data needs --embedding-teacher")
        if self.embedding_teacher and self.teacher:
            bad("--embedding-teacher and --teacher are two kinds of teacher; give one")
        if self.identity_batches:
            if self.m_images < 2:
                bad(f"m_images must be at least 2 (M - 1 support images and 1 query), got {self.m_images}")
            if self.batch_size < 2 * self.m_images:
                bad(f"batch_size {self.batch_size} holds fewer than 2 identities of m_images={self.m_images}")
        if self.augment_fixed_set:
            if self.augment != "report003":
                bad(f"augment_fixed_set needs augment report003 (its five transforms), got {self.augment}")
            if self.identity_batches:
                bad("augment_fixed_set plans every image's six variants per epoch; it does not combine with "
                    "N identities x M images batches (angproto, or a triplet term with triplet_batches identities)")
        if self.unfreeze_every and self.objective != "margin":
            bad("unfreeze_every works with objective margin only")

    @property
    def identities_per_batch(self) -> int:
        """angproto (and distillation with a triplet term): N = batch_size // m_images."""
        return self.batch_size // self.m_images

    @property
    def identity_batches(self) -> bool:
        """Whether batches are N identities x M images (else capped random batches)."""
        return self.objective == "angproto" or (self.objective == "distillation" and self.triplet_weight > 0
                                                 and self.triplet_batches == "identities")


SCHEMAS = (PairExperiment, TripletExperiment, ClassifyExperiment)


def is_setting_default(name: str, value) -> bool:
    """Whether ``value`` is the default of a setting called ``name`` (in JSON form, as a run folder stores
    it). A run folder written before a setting existed ran as that setting's default does, so resuming it
    with the setting at its default changes nothing (:func:`kerasface.training.run_folder.resume_point`)."""
    for schema in SCHEMAS:
        for f in dataclasses.fields(schema):
            if f.name == name and f.default is not dataclasses.MISSING:
                default = list(f.default) if isinstance(f.default, tuple) else f.default
                if default == value:
                    return True
    return False


def upgrade_settings(settings: dict) -> dict:
    """A run folder's stored ``config.json`` settings in today's spelling.

    Settings renamed since a run folder was written are mapped to their current
    names and values here (from the schema's ``renamed_from`` / ``renamed_values``),
    so that an older run folder still resumes with the same command: the pair
    trainer's ``val_pairs`` is ``eval_pairs``, its ``augment`` true/false is
    ``"flip"``/``"none"``, the objective ``"report002"`` is ``"distillation"``.
    Unknown keys are left as they are.
    """
    out = dict(settings)
    for schema in SCHEMAS:
        for f in dataclasses.fields(schema):
            info = setting_info(f)
            if info.renamed_from and info.renamed_from in out and f.name not in out:
                out[f.name] = out.pop(info.renamed_from)
    for schema in SCHEMAS:
        for f in dataclasses.fields(schema):
            new = setting_info(f).renamed_value(out.get(f.name))
            if new is not None:
                out[f.name] = new
    return out
