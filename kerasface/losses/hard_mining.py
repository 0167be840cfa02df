"""Hard instance mining: per-sample weights that keep the hard samples of a batch (keras.ops only).

:func:`hard_instance_weights` reweights the per-sample losses of *any*
objective (multiply them by the weights, then take the mean);
:func:`hard_instance_count` is its ``k``. :func:`threshold_instance_weights`
is the other rule: the samples below a fraction of the batch's largest loss are
scaled down by that fraction (report 002's code). Not to be confused with
:mod:`kerasface.losses.mining`, which *selects triplets* for the triplet
losses: this module keeps the samples and changes their weights.
"""

from __future__ import annotations

import math

from keras import ops

__all__ = ["HARD_MINING_RULES", "hard_instance_count", "hard_instance_weights", "threshold_instance_weights"]

HARD_MINING_RULES = ("top_k", "downweight")


def threshold_instance_weights(per_sample_losses, threshold=0.7):
    """Weights ``(batch,)`` of the threshold rule: ``threshold`` for a sample whose loss is below
    ``threshold * max(batch losses)``, 1 for the others (no gradient flows through them).

    ``mean(weights * losses)`` is then the cross entropy of report 002's code
    (``utils.LossFunctions``, ``hard_mining_threshold=.7``): the easy terms are
    scaled down by the threshold itself, nothing is renormalised and no sample is
    dropped. ``threshold=1`` scales every sample below the maximum by 1 (no change);
    ``threshold=0`` zeroes nothing either (nothing is below 0 x max for non-negative
    losses), so both are the plain mean.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    losses = ops.stop_gradient(ops.reshape(_f32(per_sample_losses), (-1,)))
    easy = losses < ops.max(losses) * threshold
    return ops.where(easy, threshold, 1.0)


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


def hard_instance_weights(per_sample_losses, keep_fraction=0.5, rule="top_k", easy_weight=0.1):
    """Weights ``(batch,)`` that keep the hardest samples of a batch (no gradient flows through them).

    ``k = max(1, ceil(keep_fraction * batch))`` samples with the largest loss
    are "hard" (ties broken by position, the earlier sample first; memory
    ``batch^2`` booleans for the ranks).

    * ``rule="top_k"``: hard samples weigh ``batch / k``, the others 0, so
      ``mean(weights * losses)`` is the mean loss of the k hard samples
      (OHEM-style dropping of the easy ones).
    * ``rule="downweight"``: hard samples weigh 1, the others ``easy_weight``,
      all rescaled so the weights average 1 (``mean(weights * losses)`` is
      the weighted mean ``sum w l / sum w``).

    ``keep_fraction=1`` gives all-ones weights under both rules.
    """
    if rule not in HARD_MINING_RULES:
        raise ValueError(f"rule must be one of {HARD_MINING_RULES}, got {rule!r}")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if not 0.0 <= easy_weight <= 1.0:
        raise ValueError(f"easy_weight must be in [0, 1], got {easy_weight}")
    losses = ops.stop_gradient(ops.reshape(_f32(per_sample_losses), (-1,)))
    n = ops.shape(losses)[0]
    n_f = ops.cast(n, "float32")
    k = ops.maximum(ops.ceil(n_f * keep_fraction - 1e-6), 1.0)
    # rank_i = #{j: l_j > l_i} + #{j < i: l_j == l_i} (0 = hardest; ties by position),
    # from a (batch, batch) comparison rather than a sort, whose tie order varies by backend
    idx = ops.arange(n)
    before = idx[None, :] < idx[:, None]
    above = ops.logical_or(losses[None, :] > losses[:, None],
                           ops.logical_and(ops.equal(losses[None, :], losses[:, None]), before))
    ranks = ops.sum(ops.cast(above, "float32"), axis=1)
    hard = ops.cast(ranks < k, "float32")
    if rule == "top_k":
        return hard * (n_f / k)
    w = hard + (1.0 - hard) * easy_weight
    return w * (n_f / ops.sum(w))


def hard_instance_count(batch_size: int, keep_fraction: float) -> int:
    """The ``k`` of :func:`hard_instance_weights` for a batch of ``batch_size``."""
    return max(1, math.ceil(batch_size * keep_fraction - 1e-6))
