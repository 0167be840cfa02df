"""Knowledge distillation terms (Hinton et al. 2015): a student against a frozen teacher.

keras.ops only; computed in float32; the teacher's side is always held constant
(``stop_gradient``).

* :func:`embedding_l2_loss`: regression of the student's embedding onto the teacher's;
* :func:`soft_cross_entropy`: ``T^2 * KL`` (or CE) of the temperature-softened distributions;
* :func:`hard_cross_entropy`: student logits against the teacher's argmax;
* :func:`logit_mse_loss`: mean squared difference of the logits (an option; report 002's
  ``train_TS.py`` regresses the pre-logits instead, :func:`embedding_l2_loss` with ``reduction="mean"``).

:class:`kerasface.models.DistillationModel` combines them (each term computed once).
"""

from __future__ import annotations

from keras import ops

__all__ = ["EMBEDDING_L2_REDUCTIONS", "SOFT_CE_KINDS", "embedding_l2_loss", "hard_cross_entropy", "logit_mse_loss",
           "soft_cross_entropy"]


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


EMBEDDING_L2_REDUCTIONS = ("sum", "mean")


def embedding_l2_loss(student, teacher, reduction="sum"):
    """``mean_i ||s_i - t_i||^2`` (``reduction="sum"`` over the dimensions, then the mean over the
    batch) or ``mean_{i,d} (s_id - t_id)^2`` (``"mean"``: report 002's ``train_TS.py``,
    ``reduce_mean(squared_difference)``, 1/dim of the former); teacher held constant."""
    if reduction not in EMBEDDING_L2_REDUCTIONS:
        raise ValueError(f"reduction must be one of {EMBEDDING_L2_REDUCTIONS}, got {reduction!r}")
    s = _f32(student)
    t = ops.stop_gradient(_f32(teacher))
    if reduction == "mean":
        return ops.mean(ops.square(s - t))
    return ops.mean(ops.sum(ops.square(s - t), axis=-1))


def _log_softmax(x):
    return x - ops.logsumexp(x, axis=-1, keepdims=True)


SOFT_CE_KINDS = ("kl", "ce", "ce_eps")


def soft_cross_entropy(student_logits, teacher_logits, temperature=4.0, kind="kl", epsilon=1e-6):
    """Hinton et al.'s soft-target term, ``T^2`` times the mean over the batch of

    * ``kind="kl"``: ``KL(p_T || q_T) = sum_c p_T log(p_T / q_T)``, or
    * ``kind="ce"``: ``-sum_c p_T log q_T`` (same gradient, plus the teacher's entropy),
    * ``kind="ce_eps"``: ``-sum_c p_T log(q_T + epsilon)`` (report 002's ``train_TS.py``,
      ``epsilon=1e-6``, used there at T = 1: a student probability far below epsilon
      costs at most ``-log(epsilon)`` and its gradient fades),

    with ``p_T = softmax(teacher / T)`` (constant) and ``q_T = softmax(student / T)``.
    The ``T^2`` keeps the gradient's size independent of ``T`` (Hinton et al. 2015, sec. 2).
    """
    if kind not in SOFT_CE_KINDS:
        raise ValueError(f"kind must be one of {SOFT_CE_KINDS}, got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = float(temperature)
    log_q = _log_softmax(_f32(student_logits) / t)
    log_p = ops.stop_gradient(_log_softmax(_f32(teacher_logits) / t))
    p = ops.exp(log_p)
    if kind == "ce_eps":
        per_sample = -ops.sum(p * ops.log(ops.exp(log_q) + float(epsilon)), axis=-1)
    elif kind == "kl":
        per_sample = ops.sum(p * (log_p - log_q), axis=-1)
    else:
        per_sample = -ops.sum(p * log_q, axis=-1)
    return (t * t) * ops.mean(per_sample)


def hard_cross_entropy(student_logits, teacher_logits):
    """Mean cross entropy of the student's logits against the teacher's argmax class."""
    targets = ops.stop_gradient(ops.argmax(_f32(teacher_logits), axis=-1))
    log_q = _log_softmax(_f32(student_logits))
    return -ops.mean(ops.take_along_axis(log_q, targets[:, None], axis=-1))


def logit_mse_loss(student_logits, teacher_logits):
    """``mean_{i,c} (s_ic - t_ic)^2``; teacher held constant."""
    s = _f32(student_logits)
    t = ops.stop_gradient(_f32(teacher_logits))
    return ops.mean(ops.square(s - t))
