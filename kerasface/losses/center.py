"""Center loss (Wen et al. 2016): pull each embedding towards a running centre of its class.

:class:`CenterLoss` is a layer because the centres are state: ``centers``
``(num_classes, dim)`` is a non-trainable weight (zeros at the start). The loss is

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

``update="sandberg"`` is davidsandberg/facenet's ``center_loss`` (the form report 002's
``utils.get_center_loss`` copies): the loss is ``mean_{i,d} (x_id - c_{y_i,d})^2`` (mean over
the batch *and* the dimensions, no 1/2) and the update
``c_j <- c_j - (1 - alpha) * sum_{i: y_i = j} (c_j - x_i)`` (TF's ``scatter_sub`` adds the
rows of one class up; no ``1 + n_j``), so ``alpha`` there is the share a centre *keeps*
(report 002: 0.95, each sample pulls its centre 5 % of the way).

keras.ops only; computed in float32. Used by :class:`kerasface.models.DistillationModel`.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["CENTER_UPDATES", "CenterLoss"]

CENTER_UPDATES = ("wen", "sandberg")


def _f32(x):
    return ops.cast(ops.convert_to_tensor(x), "float32")


@keras.saving.register_keras_serializable(package="kerasface")
class CenterLoss(keras.layers.Layer):
    """``[embeddings (batch, dim), labels (batch,)] -> 0.5 * mean_i ||x_i - c_{y_i}||^2``.

    Args:
        num_classes: number of identities (rows of ``centers``).
        alpha: centre learning rate of Wen et al.'s update (0.5 in their paper);
            with ``update="sandberg"`` the share of the old centre kept (0.95 in report 002).
        update: ``"wen"`` (Wen et al.'s loss and update, the default) or ``"sandberg"``
            (davidsandberg/facenet's, module docstring).

    Call as ``loss = layer([embeddings, labels], training=True)`` once per
    training step; the centres move only when ``training`` is true. Labels
    outside ``[0, num_classes)`` are an error of the caller (they index the
    centres).
    """

    def __init__(self, num_classes, alpha=0.5, update="wen", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if update not in CENTER_UPDATES:
            raise ValueError(f"update must be one of {CENTER_UPDATES}, got {update!r}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.update = update

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
        sandberg = self.update == "sandberg"
        if sandberg:
            loss = ops.mean(ops.square(x - c))
        else:
            loss = 0.5 * ops.mean(ops.sum(ops.square(x - c), axis=-1))
        if training:
            onehot = ops.one_hot(labels, self.num_classes, dtype="float32")  # (batch, classes)
            counts = ops.sum(onehot, axis=0)[:, None]  # n_j
            sums = ops.matmul(ops.transpose(onehot), ops.stop_gradient(x))  # sum of x_i of class j
            if sandberg:
                self.centers.assign(centers - (1.0 - self.alpha) * (counts * centers - sums))
            else:
                delta = (counts * centers - sums) / (1.0 + counts)
                self.centers.assign(centers - self.alpha * delta)
        return loss

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "alpha": self.alpha, "update": self.update})
        return config
