"""Which kind of model is evaluated, and the parts each scoring path needs (keras only).

Three kinds, each scored on its own path (:mod:`kerasface.evaluation.verification`):

* ``"embedding"``: images -> embedding, one input (a backbone, a baseline);
* ``"verifier"``: a Siamese verifier, two faces -> ``[p(different), p(same)]``
  (:func:`kerasface.models.SiameseVerifier`);
* ``"triplet"``: the triplet graph, three faces -> distances
  (:func:`kerasface.models.TripletModel`); scored through its shared embedding model.

``SiameseVerifier`` and ``TripletModel`` are builder functions of plain functional
models, and ``keras.saving.load_model`` gives back a plain ``Functional`` model
either way: there is no class to dispatch on. So the kind is given explicitly
(``kind=``), or read from the model's *signature* (the number of inputs, and for
two inputs the ``(batch, 2)`` output), never from layer names. The verifier's
fast path needs its head: found through the registered
:class:`~kerasface.layers.AbsoluteDifference` layer applied to the shared
backbone's two outputs (what a ``SiameseVerifier`` is), not through names.
"""

from __future__ import annotations

import keras

from kerasface.layers import AbsoluteDifference

__all__ = ["MODEL_KINDS", "embedding_submodel", "model_image_size", "model_kind", "verifier_head"]

MODEL_KINDS = ("embedding", "verifier", "triplet")
_KIND_BY_INPUTS = {1: "embedding", 2: "verifier", 3: "triplet"}


def model_kind(model: keras.Model, kind: str | None = None) -> str:
    """``kind`` when given (checked against the model), else the kind of the model's signature:
    one input ``"embedding"``, two inputs ``"verifier"``, three ``"triplet"``.

    ``kind="embedding"`` on a verifier or triplet graph means: score its shared embedding model.
    A verifier must output ``(batch, 2)`` ``[different, same]`` probabilities.
    """
    n = len(model.inputs)
    for inp in model.inputs:
        if len(inp.shape) != 4:
            raise ValueError(f"model {model.name!r} takes inputs of shape {tuple(inp.shape)}, not face images "
                             f"(batch, height, width, channels)")
    if kind is None:
        if n not in _KIND_BY_INPUTS:
            raise ValueError(f"cannot evaluate a model with {n} inputs (expected 1, 2 or 3)")
        kind = _KIND_BY_INPUTS[n]
    elif kind not in MODEL_KINDS:
        raise ValueError(f"kind must be one of {MODEL_KINDS}, got {kind!r}")
    elif kind != "embedding" and _KIND_BY_INPUTS.get(n) != kind:
        raise ValueError(f"a {kind} model has {MODEL_KINDS.index(kind) + 1} inputs, {model.name!r} has {n}")
    if kind == "verifier":
        shape = tuple(model.outputs[0].shape)
        if shape[-1] != 2:
            raise ValueError(f"a two-input model must output [different, same] probabilities, got shape {shape}")
    return kind


def embedding_submodel(model: keras.Model) -> keras.Model:
    """The embedding model inside ``model``: itself (one input) or the shared backbone of a
    Siamese verifier / triplet graph (the nested single-input ``keras.Model`` layer)."""
    if len(model.inputs) == 1:
        return model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and len(layer.inputs) == 1:
            return layer
    raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs and no nested single-input embedding model")


def model_image_size(model: keras.Model, default: int | None = None) -> int:
    """Side of the square input the model expects (``default`` when the model accepts any size)."""
    shape = tuple(model.inputs[0].shape)
    h, w = shape[1], shape[2]
    if h is not None and w is not None:
        if h != w:
            raise ValueError(f"only square inputs are supported, model takes {h}x{w}")
        return int(h)
    if default is None:
        raise ValueError("the model accepts any input size: pass image_size")
    return int(default)


def verifier_head(model: keras.Model) -> keras.Model | None:
    """The part of a :func:`~kerasface.models.SiameseVerifier` after its backbone, as a model
    ``[embedding_a, embedding_b] -> [p(different), p(same)]``; ``None`` for another two-input structure.

    A Siamese verifier is recognised by what it is: one :class:`~kerasface.layers.AbsoluteDifference`
    whose two inputs are the two outputs of the shared backbone. With its head a verifier scores N pairs
    over M distinct images with M backbone passes instead of 2N (LFW ``pairs.txt``: 7,701 instead of 12,000).
    """
    merges = [layer for layer in model.layers if isinstance(layer, AbsoluteDifference)]
    if len(merges) != 1 or len(model.inputs) != 2:
        return None
    backbone = next((layer for layer in model.layers if isinstance(layer, keras.Model)), None)
    if backbone is None:
        return None
    inputs = merges[0].input
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
        return None
    if any(t._keras_history.operation is not backbone for t in inputs):  # keras's graph record of a tensor
        return None
    return keras.Model(list(inputs), model.outputs[0], name=f"{model.name}_head")
