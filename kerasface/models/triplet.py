"""The monograph's triplet graph: three faces, one shared embedding, two distances.

``TripletModel(embedding)`` takes inputs ``anchor``, ``positive`` and
``negative`` (each of the embedding model's input shape), passes all three
through the *same* embedding model object (shared weights), computes
``pos_dist = d(anchor, positive)`` and ``neg_dist = d(anchor, negative)`` with
the registered :class:`kerasface.layers.EuclideanDistance` and stacks them with
:class:`kerasface.layers.StackDistances` into ``(batch, 2, 1)`` (index 0 the
positive distance), the tensor every stack loss in :mod:`kerasface.losses`
reads. No Lambda layers: the saved ``.keras`` file loads with
``import kerasface`` and the default ``safe_mode``.
"""

from __future__ import annotations

import keras

from kerasface.layers import EuclideanDistance, StackDistances

__all__ = ["TripletModel", "get_embedding_model"]


def TripletModel(embedding_model: keras.Model, squared=False, epsilon=1e-12, name="triplet"):
    """Build the triplet graph around ``embedding_model``.

    Args:
        embedding_model: images -> embeddings (e.g. :func:`kerasface.models.facenet_nn2`).
        squared: distances are ``sum((a - b)^2)`` instead of the epsilon-safe
            ``sqrt(max(sum((a - b)^2), epsilon))``.
        epsilon: floor of the squared distance under the square root.

    Returns:
        A functional model ``[anchor, positive, negative] -> (batch, 2, 1)``
        whose layers include ``embedding_model`` itself (once), ``pos_dist``,
        ``neg_dist`` and ``distances``.
    """
    shape = tuple(embedding_model.input_shape[1:])
    anchor = keras.Input(shape=shape, name="anchor")
    positive = keras.Input(shape=shape, name="positive")
    negative = keras.Input(shape=shape, name="negative")
    ea, ep, en = embedding_model(anchor), embedding_model(positive), embedding_model(negative)
    pos = EuclideanDistance(squared=squared, epsilon=epsilon, name="pos_dist")([ea, ep])
    neg = EuclideanDistance(squared=squared, epsilon=epsilon, name="neg_dist")([ea, en])
    out = StackDistances(name="distances")([pos, neg])
    return keras.Model([anchor, positive, negative], out, name=name)


def get_embedding_model(triplet_model: keras.Model) -> keras.Model:
    """The shared embedding model inside a :func:`TripletModel` (also after loading)."""
    nested = [layer for layer in triplet_model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(
            f"{triplet_model.name!r} holds {len(nested)} nested models; expected exactly one "
            "shared embedding model"
        )
    return nested[0]
