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
    "bundled_sample_dir",
]


@dataclass(frozen=True)
class PairExperiment:
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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def override(self, **changes) -> "PairExperiment":
        """A copy with ``changes`` applied; ``None`` values are ignored; unknown keys raise."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - fields
        if unknown:
            raise ValueError(f"unknown preset field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


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
