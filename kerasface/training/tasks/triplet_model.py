"""The triplet trainer's models: the L2-normalised embedding model and the compiled graph it fits."""

from __future__ import annotations

import logging

import keras
import numpy as np

from kerasface.config import TripletExperiment
from kerasface.layers import L2Normalize
from kerasface.losses import TripletAccuracy, TripletDistanceMean, get_triplet_loss
from kerasface.models import TripletModel, build_backbone, facenet_nn2
from kerasface.optimizers import FusedAdam
from kerasface.training.distribute import Runtime

logger = logging.getLogger("kerasface.training")

__all__ = ["build_embedding_model", "compile_triplet", "prebuild_training_step"]


def build_embedding_model(cfg: TripletExperiment) -> keras.Model:
    """NN2 with its own L2 layer, or any registered backbone with an L2 normalisation added on top
    (neither with ``l2_normalize=False``)."""
    shape = (cfg.image_size, cfg.image_size, 3)
    if cfg.backbone == "facenet_nn2":
        return facenet_nn2(input_shape=shape, embedding_dim=cfg.embedding_dim, norm=cfg.norm,
                           l2_pooling=cfg.l2_pooling, bn_momentum=cfg.bn_momentum, l2_normalize=cfg.l2_normalize)
    kwargs = {"input_shape": shape, "embedding_dim": cfg.embedding_dim}
    if cfg.backbone.startswith("vargfacenet"):
        kwargs.update(implementation=cfg.group_conv, bn_momentum=cfg.bn_momentum)
    backbone = build_backbone(cfg.backbone, **kwargs)
    if not cfg.l2_normalize:
        return backbone
    # float32 whatever the dtype policy: the embedding that distances and losses read
    out = L2Normalize(dtype="float32", name="l2_embedding")(backbone.outputs[0])
    return keras.Model(backbone.inputs[0], out, name=f"{backbone.name}_l2")


def compile_triplet(cfg: TripletExperiment, embedder: keras.Model,
             runtime: Runtime | None = None) -> tuple[keras.Model, keras.Model]:
    """``(fitted model, triplet graph)``: the triplet graph (offline) or the embedding model (online)."""
    xla = runtime.compile_kwargs() if runtime is not None else {}
    triplet = TripletModel(embedder, epsilon=cfg.distance_epsilon, name=f"{embedder.name}_triplet")
    stack_kw = {} if cfg.loss.startswith("difference") else {"margin": cfg.margin}
    stack_metrics = [TripletAccuracy(), TripletDistanceMean("pos"), TripletDistanceMean("neg")]
    if cfg.mining == "offline":
        triplet.compile(optimizer=FusedAdam(cfg.learning_rate),
                        loss=get_triplet_loss(cfg.loss, **stack_kw), metrics=stack_metrics, **xla)
        return triplet, triplet
    embedder.compile(optimizer=FusedAdam(cfg.learning_rate),
                     loss=get_triplet_loss(cfg.mining, margin=cfg.margin, squared=cfg.squared,
                                           epsilon=cfg.distance_epsilon), **xla)
    # The saved graph carries the matching stack loss, ready for fine-tuning on offline triplets.
    triplet.compile(loss=get_triplet_loss(cfg.loss, **stack_kw), metrics=stack_metrics)
    return embedder, triplet


def prebuild_training_step(model: keras.Model, cfg: TripletExperiment | None = None) -> None:
    """Create every variable of a training step before the first one: the optimizer's slots and
    the compiled loss / metric trackers. Otherwise TensorFlow traces the first step twice (once to
    create the variables, once more to run), which nearly doubles its slow tracing (40-45 s -> about
    29 s for the 32x32 NN2 triplet graph on the shared 2-core CPU)."""
    model.optimizer.build(model.trainable_variables)
    build = getattr(model, "_symbolic_build", None)  # Keras 3's own pre-build (private): metrics, loss
    if cfg is None or build is None:
        return
    s = cfg.image_size
    x = np.zeros((2, s, s, 3), np.float32)
    batch = (((x, x, x), np.zeros((2, 2, 1), np.float32)) if len(model.inputs) == 3
             else (x, np.zeros((2,), np.int32)))
    try:
        build(data_batch=batch)
    except Exception as e:  # an optimisation only: fit builds whatever is left
        logger.debug("symbolic pre-build skipped: %s", e)
