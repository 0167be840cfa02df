"""Angular prototypical loss (Chung et al. 2020; report 001's fine-tuning loss), keras.ops only.

A batch holds ``N`` identities x ``M`` images (``M >= 2``), identity-major:
``[N, M, D]``, or flat ``[N * M, D]`` with rows ``i * M ... i * M + M - 1``
belonging to identity ``i``. For each identity the first ``M - 1`` embeddings
are the support set, their mean the prototype ``p_i``, and the last one the
query ``q_i``. The logits are

    ``logits[i, j] = w * cos(q_i, p_j) + b``

and the loss is the cross entropy of each row against target ``i``, averaged
over the ``N`` queries. ``w`` and ``b`` are learned. ``w`` must stay positive
(a negative scale would reward dissimilarity): it is ``softplus(w_raw) +
min_scale``, a reparametrisation that holds whatever the optimiser does to
``w_raw`` (the reference PyTorch code calls ``torch.clamp(self.w, 1e-6)`` and
discards the result, so its ``w`` is not kept positive at all). ``w_raw`` is
initialised so that ``w`` starts at exactly ``init_w``.

Cosines use ``x * rsqrt(max(|x|^2, epsilon))``, finite with a finite gradient
for zero vectors and identical embeddings.

Because ``w`` and ``b`` are weights, these are layers:

* :class:`AngularPrototypicalLogits` returns the ``[N, N]`` logits; put it
  after the backbone and train with ``SparseCategoricalCrossentropy
  (from_logits=True)`` against ``y = arange(N)``;
* :class:`AngularPrototypicalLoss` returns the scalar loss (custom training
  loops, or ``model.add_loss``); ``.logits(x)`` gives the logits.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasface.ops import l2_normalize

__all__ = ["AngularPrototypicalLogits", "AngularPrototypicalLoss", "angular_prototypical_logits"]


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def angular_prototypical_logits(embeddings, w, b, num_per_class=None, epsilon=1e-12):
    """``w * cos(query_i, prototype_j) + b`` for ``[N, M, D]`` (or flat with ``num_per_class``)."""
    x = embeddings
    if len(x.shape) == 2:
        if not num_per_class:
            raise ValueError("flat [N * M, D] embeddings need num_per_class=M")
        x = ops.reshape(x, (-1, int(num_per_class), x.shape[-1]))
    elif len(x.shape) != 3:
        raise ValueError(f"embeddings must be [N, M, D] or [N * M, D], got shape {x.shape}")
    m = x.shape[1]
    if m is not None and m < 2:
        raise ValueError(f"need M >= 2 images per identity (M - 1 support + 1 query), got M={m}")
    proto = ops.mean(x[:, :-1, :], axis=1)
    query = x[:, -1, :]
    cos = ops.matmul(l2_normalize(query, epsilon=epsilon), ops.transpose(l2_normalize(proto, epsilon=epsilon)))
    return w * cos + b


@keras.saving.register_keras_serializable(package="kerasface")
class AngularPrototypicalLogits(keras.layers.Layer):
    """Learnable-scale cosine logits ``[N, N]`` of queries against prototypes.

    Args:
        num_per_class: ``M``, needed for flat ``[N * M, D]`` inputs (ignored for ``[N, M, D]``).
        init_w, init_b: initial scale (> ``min_scale``) and bias (10 and -5, as Chung et al.).
        min_scale: lower bound of ``w`` (``w = softplus(w_raw) + min_scale``).
        epsilon: floor of the squared norms in the cosine.

    float32 unless given another ``dtype``.
    """

    def __init__(self, num_per_class=None, init_w=10.0, init_b=-5.0, min_scale=1e-6,
                 epsilon=1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if num_per_class is not None and int(num_per_class) < 2:
            raise ValueError(f"num_per_class must be >= 2, got {num_per_class}")
        if init_w <= min_scale:
            raise ValueError(f"init_w must exceed min_scale={min_scale}, got {init_w}")
        self.num_per_class = None if num_per_class is None else int(num_per_class)
        self.init_w = float(init_w)
        self.init_b = float(init_b)
        self.min_scale = float(min_scale)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.w_raw = self.add_weight(
            name="w_raw", shape=(),
            initializer=keras.initializers.Constant(_inverse_softplus(self.init_w - self.min_scale)))
        self.b = self.add_weight(name="b", shape=(),
                                 initializer=keras.initializers.Constant(self.init_b))

    @property
    def w(self):
        """The positive scale ``softplus(w_raw) + min_scale``."""
        return ops.softplus(self.w_raw) + self.min_scale

    def logits(self, embeddings):
        x = ops.cast(embeddings, self.compute_dtype)
        return angular_prototypical_logits(x, self.w, self.b, self.num_per_class, self.epsilon)

    def call(self, embeddings):
        return self.logits(embeddings)

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        if len(input_shape) == 2 and n is not None:
            n //= self.num_per_class
        return (n, n)

    def get_config(self):
        config = super().get_config()
        config.update(num_per_class=self.num_per_class, init_w=self.init_w, init_b=self.init_b,
                      min_scale=self.min_scale, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="kerasface")
class AngularPrototypicalLoss(AngularPrototypicalLogits):
    """The angular prototypical loss as a layer: embeddings -> scalar mean cross entropy.

    Same arguments and weights as :class:`AngularPrototypicalLogits`; the
    target of query ``i`` is prototype ``i``.
    """

    def call(self, embeddings):
        logits = self.logits(embeddings)
        diag = ops.diagonal(logits)
        return ops.mean(ops.logsumexp(logits, axis=-1) - diag)

    def compute_output_shape(self, input_shape):
        return ()
