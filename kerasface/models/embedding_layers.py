"""Layers after a backbone's embedding, built by one piece of code for every user.

* :func:`stack_embedding_layers`: report 003's extra ``ReLU -> Dense(dim)`` layers after the linear
  embedding (``embedding_relu<i>``, ``embedding_<i>``);
* :func:`projection_layer`: a student's learned projection onto a teacher's embedding size
  (``distill_projection``), beside the student in :class:`~kerasface.models.DistillationModel` or, through
  :func:`with_projection`, inside the student's embedding model (the classification trainer: the saved
  ``model.keras`` then gives the embedding that was distilled).

Each ``Dense`` here computes in float32 (:func:`embedding_dense`), so that under a mixed-precision policy
the embedding stays float32, as the backbones' own embedding layers do. They are plain Keras ``Dense`` and
``ReLU`` layers with the names models saved by earlier releases carry, so those files and run folders
(their ``.weights.h5`` backups) load unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras

__all__ = ["PROJECTION_NAME", "append_layers", "embedding_dense", "projection_layer", "stack_embedding_layers",
           "with_projection"]

#: The layer name of the distillation projection (in saved models of every release).
PROJECTION_NAME = "distill_projection"


def embedding_dense(units: int, name: str, use_bias: bool = True) -> keras.layers.Dense:
    """A ``Dense(units)`` that computes in float32 whatever the dtype policy (an embedding or logits)."""
    return keras.layers.Dense(int(units), use_bias=bool(use_bias), dtype="float32", name=name)


def projection_layer(dim: int, use_bias: bool = False) -> keras.layers.Dense:
    """The projection of a student's embedding onto a ``dim``-d teacher embedding: ``Dense(dim)`` named
    ``distill_projection``, bias-free by default, float32."""
    return embedding_dense(dim, PROJECTION_NAME, use_bias)


def append_layers(backbone: keras.Model, layers: Iterable[keras.layers.Layer]) -> keras.Model:
    """``backbone``'s layers followed by ``layers`` (applied in order to its embedding): a model of the
    backbone's name sharing its layers (freezing one acts on both)."""
    x = backbone.outputs[0]
    for layer in layers:
        x = layer(x)
    return keras.Model(backbone.inputs[0], x, name=backbone.name)


def stack_embedding_layers(backbone: keras.Model, layers: int) -> keras.Model:
    """The backbone with ``layers - 1`` more ``ReLU -> Dense(dim)`` after its linear embedding (report 003's
    "sequence of several" linear layers before the classifier; 1: the backbone unchanged)."""
    if layers <= 1:
        return backbone
    dim = int(backbone.outputs[0].shape[-1])
    return append_layers(backbone, [layer for i in range(2, layers + 1)
                                    for layer in (keras.layers.ReLU(name=f"embedding_relu{i}"),
                                                  embedding_dense(dim, f"embedding_{i}"))])


def with_projection(backbone: keras.Model, dim: int, always: bool = False) -> keras.Model:
    """``backbone`` when it gives ``dim``-d embeddings (and not ``always``), else the same layers followed by
    :func:`projection_layer` (a model of the same name).  A backbone whose last layer is already a
    ``dim``-d projection (a distilled student given to ``--init-from``) is returned as it is."""
    size = int(backbone.outputs[0].shape[-1])
    if backbone.layers[-1].name == PROJECTION_NAME:
        if size != int(dim):
            raise ValueError(f"{backbone.name} already ends in a {size}-d {PROJECTION_NAME}; it cannot learn a "
                             f"{dim}-d teacher's embedding (start from a model without the projection)")
        return backbone
    if size == int(dim) and not always:
        return backbone
    return append_layers(backbone, [projection_layer(dim)])
