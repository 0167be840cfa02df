"""Losses: the triplet family of report 004 (FaceNet).

Two kinds, selectable by name with :func:`get_triplet_loss`:

* read the triplet graph's stacked distances ``(batch, 2, 1)``
  (:func:`kerasface.models.TripletModel`), ``y_true`` ignored:
  ``"hinge"`` ``mean(max(0, d_pos - d_neg + margin))``, ``"difference"``
  ``mean(d_pos - d_neg)``, and their ``"_squared"`` forms (distances squared
  first);
* mine triplets online inside a P x K batch from integer labels and
  embeddings: ``"batch_all"``, ``"batch_hard"``, ``"semi_hard"``.

:func:`select_triplets` (NumPy) is the offline, chunk-wise FaceNet selection.
Report 001/003's margin-softmax family (:func:`margin_logits`, used by
:class:`kerasface.models.MarginHead`) and the angular prototypical loss
(:class:`AngularPrototypicalLogits` / :class:`AngularPrototypicalLoss`, layers
because ``w`` and ``b`` are learned) live in ``margin.py`` and ``angular.py``;
the center loss in ``center.py``, the distillation terms (embedding regression,
soft / hard cross entropy, logit MSE) in ``distillation.py``, the unit-embedding
distillation from a frozen teacher in ``embedding_distillation.py``, the pre-logit norm
in ``regularizers.py`` and hard instance mining (per-sample reweighting) in
``hard_mining.py``.
Every loss and metric class is registered under the ``kerasface`` package.
"""

from __future__ import annotations

import keras

from kerasface.losses.angular import (
    AngularPrototypicalLogits,
    AngularPrototypicalLoss,
    angular_prototypical_logits,
)
from kerasface.losses.center import CenterLoss
from kerasface.losses.distillation import (
    embedding_l2_loss,
    hard_cross_entropy,
    logit_mse_loss,
    soft_cross_entropy,
)
from kerasface.losses.embedding_distillation import EMBEDDING_DISTILL_METRICS, embedding_distillation_loss
from kerasface.losses.hard_mining import (
    HARD_MINING_RULES,
    hard_instance_count,
    hard_instance_weights,
    threshold_instance_weights,
)
from kerasface.losses.margin import MARGIN_KINDS, arcface_target, margin_logits
from kerasface.losses.mining import select_triplets
from kerasface.losses.online import (
    BatchAllTripletLoss,
    BatchHardTripletLoss,
    SemiHardTripletLoss,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    pairwise_distances,
    semi_hard_triplet_loss,
)
from kerasface.losses.regularizers import prelogit_norm_loss
from kerasface.losses.triplet import (
    TripletAccuracy,
    TripletDifferenceLoss,
    TripletDistanceMean,
    TripletHingeLoss,
)

__all__ = [
    "HARD_MINING_RULES",
    "MARGIN_KINDS",
    "TRIPLET_LOSSES",
    "AngularPrototypicalLogits",
    "AngularPrototypicalLoss",
    "angular_prototypical_logits",
    "arcface_target",
    "BatchAllTripletLoss",
    "CenterLoss",
    "embedding_l2_loss",
    "EMBEDDING_DISTILL_METRICS",
    "embedding_distillation_loss",
    "hard_cross_entropy",
    "hard_instance_count",
    "hard_instance_weights",
    "logit_mse_loss",
    "prelogit_norm_loss",
    "soft_cross_entropy",
    "BatchHardTripletLoss",
    "SemiHardTripletLoss",
    "TripletAccuracy",
    "TripletDifferenceLoss",
    "TripletDistanceMean",
    "TripletHingeLoss",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "get_triplet_loss",
    "margin_logits",
    "pairwise_distances",
    "select_triplets",
    "semi_hard_triplet_loss",
    "threshold_instance_weights",
]

# name -> (class, fixed keyword arguments); "stack" losses read (batch, 2, 1),
# "online" ones take (labels, embeddings).
TRIPLET_LOSSES = {
    "hinge": (TripletHingeLoss, {"squared": False}),
    "hinge_squared": (TripletHingeLoss, {"squared": True}),
    "difference": (TripletDifferenceLoss, {"squared": False}),
    "difference_squared": (TripletDifferenceLoss, {"squared": True}),
    "batch_all": (BatchAllTripletLoss, {}),
    "batch_hard": (BatchHardTripletLoss, {}),
    "semi_hard": (SemiHardTripletLoss, {}),
}


def get_triplet_loss(name: str, **kwargs) -> keras.losses.Loss:
    """Build the triplet loss registered as ``name`` (see ``TRIPLET_LOSSES``).

    Keyword arguments go to the class (``margin=...``, ``squared=...`` for the
    online losses, ...); the ``_squared`` names fix ``squared=True``.
    """
    try:
        cls, fixed = TRIPLET_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown triplet loss {name!r}; known: {', '.join(sorted(TRIPLET_LOSSES))}"
        ) from None
    clash = set(fixed) & set(kwargs)
    if clash:
        raise ValueError(f"{name!r} fixes {sorted(clash)}; do not pass them")
    return cls(**fixed, **kwargs)
