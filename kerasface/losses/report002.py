"""Report 002's training terms: center loss, pre-logit norm, hard instance mining, distillation.

keras.ops only; everything is computed in float32.

* :class:`CenterLoss` (Wen et al. 2016), a layer because the centres are
  state: ``centers`` ``(num_classes, dim)`` is a non-trainable weight (zeros
  at the start). The loss is

      ``L_C = 0.5 * mean_i ||x_i - c_{y_i}||^2``

  (Wen et al.'s ``1/2 sum_i``, averaged over the batch instead of summed;
  davidsandberg's ``center_loss`` takes the mean over batch *and* dimensions
  and has no 1/2, i.e. ``2 / dim`` times this). Its gradient reaches the
  embeddings only; the centres enter as constants. With ``training=True``
  the centres of the classes present in the batch are then moved (Wen et
  al.'s eq. 4):

      ``delta_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)``,
      ``c_j <- c_j - alpha * delta_j``

  where ``n_j`` is the number of samples of class ``j`` in the batch (classes
  not in the batch do not move). The loss returned is the one of the centres
  *before* the update. (davidsandberg's ``(1 - alfa) * (c - x)`` scatter-sub
  has no ``1 + n_j`` and applies duplicates one after the other; report 002
  calls it with ``alfa=0.95``.)
* :func:`prelogit_norm_loss`: ``mean_i (sum_d (|x_id| + eps)^p)^(1/p)``,
  davidsandberg's ``prelogits_norm`` (p = 1, eps = 1e-4; the eps keeps the
  value and gradient finite at zero). Report 002 weights it 1e-5.
* :func:`hard_instance_weights`: per-sample weights that keep the hard
  samples of a batch (rule below); multiply per-sample losses by them and
  take the mean.
* Distillation (Hinton et al. 2015): :func:`embedding_l2_loss`,
  :func:`soft_cross_entropy` (``T^2 * KL`` of temperature-softened
  distributions), :func:`hard_cross_entropy` (student logits against the
  teacher's argmax) and :func:`logit_mse_loss` (report 002's ``train_TS.py``:
  mean squared difference of the logits, plus the ground-truth CE).

:class:`kerasface.models.Report002Model` combines them (each term computed once).
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = [
    "HARD_MINING_RULES",
    "CenterLoss",
    "embedding_l2_loss",
    "hard_cross_entropy",
    "hard_instance_count",
    "hard_instance_weights",
    "logit_mse_loss",
    "prelogit_norm_loss",
    "soft_cross_entropy",
]

HARD_MINING_RULES = ("top_k", "downweight")


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


@keras.saving.register_keras_serializable(package="kerasface")
class CenterLoss(keras.layers.Layer):
    """``[embeddings (batch, dim), labels (batch,)] -> 0.5 * mean_i ||x_i - c_{y_i}||^2``.

    Args:
        num_classes: number of identities (rows of ``centers``).
        alpha: centre learning rate of Wen et al.'s update (0.5 in their paper).

    Call as ``loss = layer([embeddings, labels], training=True)`` once per
    training step; the centres move only when ``training`` is true. Labels
    outside ``[0, num_classes)`` are an error of the caller (they index the
    centres).
    """

    def __init__(self, num_classes, alpha=0.5, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)

    def build(self, input_shape):
        emb_shape = input_shape[0]
        dim = int(emb_shape[-1])
        # "mean": under a tf.distribute strategy each replica updates from its shard of the
        # batch and the replicas' new centres are averaged
        self.centers = self.add_weight(name="centers", shape=(self.num_classes, dim),
                                       initializer="zeros", trainable=False, dtype="float32",
                                       aggregation="mean")
        self.built = True

    def call(self, inputs, training=False):
        embeddings, labels = inputs
        x = _f32(embeddings)
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        centers = ops.convert_to_tensor(self.centers)
        c = ops.stop_gradient(ops.take(centers, labels, axis=0))
        loss = 0.5 * ops.mean(ops.sum(ops.square(x - c), axis=-1))
        if training:
            onehot = ops.one_hot(labels, self.num_classes, dtype="float32")  # (batch, classes)
            counts = ops.sum(onehot, axis=0)[:, None]  # n_j
            sums = ops.matmul(ops.transpose(onehot), ops.stop_gradient(x))  # sum of x_i of class j
            delta = (counts * centers - sums) / (1.0 + counts)
            self.centers.assign(centers - self.alpha * delta)
        return loss

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "alpha": self.alpha})
        return config


def prelogit_norm_loss(embeddings, p=1.0, epsilon=1e-4):
    """``mean_i (sum_d (|x_id| + epsilon)^p)^(1/p)``: mean L_p norm of the pre-logits (p >= 1)."""
    if p < 1.0:
        raise ValueError(f"p must be >= 1, got {p}")
    x = ops.abs(_f32(embeddings)) + epsilon
    if p == 1.0:
        norms = ops.sum(x, axis=-1)
    else:
        norms = ops.power(ops.sum(ops.power(x, p), axis=-1), 1.0 / p)
    return ops.mean(norms)


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


def embedding_l2_loss(student, teacher):
    """``mean_i ||s_i - t_i||^2`` (squared euclidean distance, mean over the batch); teacher held constant."""
    s = _f32(student)
    t = ops.stop_gradient(_f32(teacher))
    return ops.mean(ops.sum(ops.square(s - t), axis=-1))


def _log_softmax(x):
    return x - ops.logsumexp(x, axis=-1, keepdims=True)


def soft_cross_entropy(student_logits, teacher_logits, temperature=4.0, kind="kl"):
    """Hinton et al.'s soft-target term, ``T^2`` times the mean over the batch of

    * ``kind="kl"``: ``KL(p_T || q_T) = sum_c p_T log(p_T / q_T)``, or
    * ``kind="ce"``: ``-sum_c p_T log q_T`` (same gradient, plus the teacher's entropy),

    with ``p_T = softmax(teacher / T)`` (constant) and ``q_T = softmax(student / T)``.
    The ``T^2`` keeps the gradient's size independent of ``T`` (Hinton et al. 2015, sec. 2).
    """
    if kind not in ("kl", "ce"):
        raise ValueError(f"kind must be 'kl' or 'ce', got {kind!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = float(temperature)
    log_q = _log_softmax(_f32(student_logits) / t)
    log_p = ops.stop_gradient(_log_softmax(_f32(teacher_logits) / t))
    p = ops.exp(log_p)
    per_sample = ops.sum(p * (log_p - log_q), axis=-1) if kind == "kl" else -ops.sum(p * log_q, axis=-1)
    return (t * t) * ops.mean(per_sample)


def hard_cross_entropy(student_logits, teacher_logits):
    """Mean cross entropy of the student's logits against the teacher's argmax class."""
    targets = ops.stop_gradient(ops.argmax(_f32(teacher_logits), axis=-1))
    log_q = _log_softmax(_f32(student_logits))
    return -ops.mean(ops.take_along_axis(log_q, targets[:, None], axis=-1))


def logit_mse_loss(student_logits, teacher_logits):
    """``mean_{i,c} (s_ic - t_ic)^2`` (report 002's ``train_TS.py``); teacher held constant."""
    s = _f32(student_logits)
    t = ops.stop_gradient(_f32(teacher_logits))
    return ops.mean(ops.square(s - t))


def hard_instance_count(batch_size: int, keep_fraction: float) -> int:
    """The ``k`` of :func:`hard_instance_weights` for a batch of ``batch_size``."""
    return max(1, math.ceil(batch_size * keep_fraction - 1e-6))
