"""``--init-from``: start a trainer's backbone from an earlier run's embedding model.

Shared by the classification trainer (AM-softmax -> angular prototypical fine-tuning, staged
fine-tuning) and the pair trainer (a backbone trained on identities or distilled from a teacher,
then the Siamese head trained on pairs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras

from kerasface.evaluation.embeddings import embedding_submodel
from kerasface.training.distribute import Runtime

logger = logging.getLogger("kerasface.training")

__all__ = ["load_init_model", "init_model_for"]


def load_init_model(path, image_size: int | None = None) -> keras.Model:
    """The embedding model of a run folder (its ``model.keras``) or of a ``.keras`` file; with ``image_size``,
    checked to take square faces of that side."""
    if str(path) == "REQUIRED":
        raise FileNotFoundError("this preset starts from a trained backbone: pass --init-from RUN_DIR (a run "
                                "folder of `kerasface train`) or a .keras embedding model")
    p = Path(path).expanduser()
    f = p / "model.keras" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"--init-from {path}: no model.keras there (a run folder of `kerasface train`, "
                                "or a .keras embedding model)")
    model = keras.saving.load_model(f, compile=False)
    model = embedding_submodel(model) if len(model.inputs) != 1 else model
    if image_size is not None and tuple(model.input_shape[1:3]) != (image_size, image_size):
        raise ValueError(f"--init-from {path}: its model takes {model.input_shape[1]}x{model.input_shape[2]} "
                         f"faces, this run {image_size}x{image_size}; pass --image-size {model.input_shape[1]}")
    logger.info("backbone from %s (%s, %d parameters)", f, model.name, model.count_params())
    return model


def init_model_for(model: keras.Model, runtime: Runtime) -> keras.Model:
    """``model`` ready to train under ``runtime``: under a distribution strategy or a mixed-precision policy
    its variables must be created inside the strategy's scope and policy, so it is cloned there and the
    weights copied; otherwise ``model`` itself."""
    if runtime.strategy == "default" and runtime.policy_name() == "float32":
        return model
    fresh = keras.models.clone_model(model)
    fresh.set_weights(model.get_weights())
    return fresh
