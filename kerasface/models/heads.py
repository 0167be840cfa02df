"""Classification heads for training embedding backbones (reports 001 and 003).

:class:`MarginHead` holds the class weights and produces logits for
sparse categorical cross-entropy (``from_logits=True``):

* ``"softmax"``: a plain linear classifier ``x @ W + b`` (unnormalised, with
  bias): report 003's "classification layer" with cross entropy;
* ``"normalized"``: ``s * cos`` (normalised weights and embeddings, no margin);
* ``"cosface"`` / ``"amsoftmax"``: ``s * (cos - m)`` for the target class
  (report 001: s = 30, m = 0.1);
* ``"arcface"``: ``s * cos(theta + m)`` for the target class, computed
  without NaN at ``|cos| = 1`` and with insightface's fallback
  ``cos - m * sin(m)`` where ``theta + m > pi`` (or ``easy_margin``)
  (report 003: s = 5, m = 0.1). Formulas: :mod:`kerasface.losses.margin`.

The margin needs the label, so the head is called as ``head(embeddings,
labels=labels)`` while training; without labels it returns the margin-free
logits (``s * cos``, or the linear logits). The head only serves training:
:func:`classification_model` wraps a backbone into a model with inputs
``(image, label)`` and logits out, and :func:`get_embedding_model` takes the
backbone (images -> embedding, the model users keep) back out of it, also after
``keras.saving.load_model``.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasface.losses.margin import margin_logits
from kerasface.models.triplet import get_embedding_model  # the one nested model of a graph

__all__ = ["HEAD_KINDS", "MarginHead", "classification_model", "get_embedding_model"]

HEAD_KINDS = ("softmax", "normalized", "cosface", "amsoftmax", "arcface")


@keras.saving.register_keras_serializable(package="kerasface")
class MarginHead(keras.layers.Layer):
    """Class weights ``(embedding_dim, num_classes)`` -> logits ``(batch, num_classes)``.

    Args:
        num_classes: number of training identities.
        kind: one of ``HEAD_KINDS`` (module docstring).
        scale: ``s`` (ignored by ``"softmax"``).
        margin: ``m`` (ignored by ``"softmax"`` and ``"normalized"``).
        easy_margin: ArcFace only: apply the margin only where ``cos > 0``.
        epsilon: floor of squared norms and of ``1 - cos^2`` under square roots.

    Computes in float32 unless given another ``dtype`` (the logits of a
    mixed-precision model stay float32).
    """

    def __init__(self, num_classes, kind="cosface", scale=30.0, margin=0.1, easy_margin=False,
                 epsilon=1e-12, kernel_initializer="glorot_uniform", kernel_regularizer=None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if margin < 0 or (kind == "arcface" and margin >= 1.5707963):
            raise ValueError(f"margin must be in [0, pi/2) for arcface and >= 0 otherwise, got {margin}")
        self.num_classes = int(num_classes)
        self.kind = kind
        self.scale = float(scale)
        self.margin = float(margin)
        self.easy_margin = bool(easy_margin)
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(dim, self.num_classes),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)
        self.bias = (self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")
                     if self.kind == "softmax" else None)

    def cosine(self, embeddings):
        """Cosines between the embeddings and every class weight vector."""
        x = ops.cast(embeddings, self.compute_dtype)
        x = x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), self.epsilon))
        w = self.kernel
        w = w * ops.rsqrt(ops.maximum(ops.sum(ops.square(w), axis=0, keepdims=True), self.epsilon))
        return ops.matmul(x, w)

    def call(self, embeddings, labels=None):
        if self.kind == "softmax":
            return ops.matmul(ops.cast(embeddings, self.compute_dtype), self.kernel) + self.bias
        kind = "cosface" if self.kind == "amsoftmax" else self.kind
        return margin_logits(self.cosine(embeddings), labels, kind, self.scale, self.margin,
                             self.easy_margin, self.epsilon)

    def compute_output_shape(self, embeddings_shape, labels_shape=None):
        return (*tuple(embeddings_shape[:-1]), self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, kind=self.kind, scale=self.scale, margin=self.margin,
            easy_margin=self.easy_margin, epsilon=self.epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=(keras.regularizers.serialize(self.kernel_regularizer)
                                if self.kernel_regularizer else None),
        )
        return config


def classification_model(backbone: keras.Model, num_classes: int, head="arcface", name=None,
                         **head_kwargs) -> keras.Model:
    """Training model ``[image, label] -> logits`` around ``backbone``.

    ``head`` is a :class:`MarginHead` kind (keyword arguments such as
    ``scale=5.0, margin=0.1`` go to the head) or a ready ``MarginHead``. The
    backbone is nested as one layer and shares its weights with the caller's
    model. Train with ``SparseCategoricalCrossentropy(from_logits=True)`` on
    ``x={"image": images, "label": labels}, y=labels``.
    """
    if isinstance(head, str):
        head = MarginHead(num_classes, kind=head, name="margin_head", **head_kwargs)
    elif head_kwargs:
        raise ValueError("head keyword arguments are only taken with a head kind name")
    if head.num_classes != num_classes:
        raise ValueError(f"head has {head.num_classes} classes, expected {num_classes}")
    image = keras.Input(shape=tuple(backbone.input_shape[1:]), name="image")
    label = keras.Input(shape=(), dtype="int32", name="label")
    logits = head(backbone(image), labels=label)
    return keras.Model([image, label], logits,
                       name=name or f"{backbone.name}_{head.kind}")

