"""Name -> builder map for every backbone (``kerasface summary NAME``)."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kerasface.models.applications import keras_application
from kerasface.models.dlib_resnet import dlib_resnet_v1
from kerasface.models.facenet_nn2 import facenet_nn2
from kerasface.models.inception_resnet import REPORT_INPUT_SHAPE, inception_resnet_v1
from kerasface.models.resnet import resnet18, resnet34
from kerasface.models.squeezenext import sqnxt23v5_w1, sqnxt23v5_w1_gdc, sqnxt23v5_w2, sqnxt23v5_w2_gdc
from kerasface.models.thinresnet import ThinResNet, thin_resnet34, thin_resnet50, thin_resnet50_v2
from kerasface.models.vargfacenet import vargfacenet, vargfacenet_reduced, vargfacenet_tiny

__all__ = ["BACKBONES", "build_backbone", "list_backbones"]


def _report002_inception_resnet_v1(**kwargs):
    """Inception-ResNet-v1 (FaceNet layout, 512-d) at report 002's image size, 218x178 (its test-time input;
    the authors train at 224x224)."""
    kwargs.setdefault("input_shape", REPORT_INPUT_SHAPE)
    return inception_resnet_v1(**kwargs)


def _inception_resnet_v1_nobn(**kwargs):
    """Inception-ResNet-v1 as report 002's ``model/teacher.py`` builds it: convolutions with bias and no BN,
    no bottleneck (the 1792-d pooled, dropped-out features are the pre-logits); 224x224, the size its
    ``data_reader.py`` feeds in training. With a ``Dense(2360)`` classifier: 26,781,288 parameters."""
    kwargs.setdefault("input_shape", (224, 224, 3))
    kwargs.pop("bn_momentum", None)
    return inception_resnet_v1(embedding_dim=None, batch_norm=False, name="inception_resnet_v1_nobn", **kwargs)


def _thin_bottleneck(variant):
    def build(**kwargs):
        return ThinResNet(variant, layout="bottleneck", **kwargs)
    build.__doc__ = f"{variant} as report 001's table draws it: bottleneck blocks, 64-channel 7x7 stem."
    return build


def _application(kind):
    def build(**kwargs):
        kwargs.pop("bn_momentum", None)
        return keras_application(kind, **kwargs)
    build.__doc__ = f"keras.applications' {kind} + Dense(512) embedding (report 003 tried it)."
    build.accepts_weights = True
    return build


BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "dlib_resnet_v1": dlib_resnet_v1,
    "resnet50": _application("resnet50"),
    "efficientnet_b0": _application("efficientnet_b0"),
    "efficientnet_v2_m": _application("efficientnet_v2_m"),
    "inception_resnet_v1_nobn": _inception_resnet_v1_nobn,
    "facenet_nn2": facenet_nn2,
    "inception_resnet_v1": _report002_inception_resnet_v1,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "sqnxt23v5_w1": sqnxt23v5_w1,
    "sqnxt23v5_w1_gdc": sqnxt23v5_w1_gdc,
    "sqnxt23v5_w2": sqnxt23v5_w2,
    "sqnxt23v5_w2_gdc": sqnxt23v5_w2_gdc,
    "thin_resnet34": thin_resnet34,
    "thin_resnet50": thin_resnet50,
    "thin_resnet50_v2": thin_resnet50_v2,
    "thin_resnet34_bottleneck": _thin_bottleneck("thin_resnet34"),
    "thin_resnet50_bottleneck": _thin_bottleneck("thin_resnet50"),
    "thin_resnet50_v2_bottleneck": _thin_bottleneck("thin_resnet50_v2"),
    "vargfacenet": vargfacenet,
    "vargfacenet_reduced": vargfacenet_reduced,
    "vargfacenet_tiny": vargfacenet_tiny,
}

# builders whose pooled features go through a Dropout layer (``dropout=`` rate; ``--dropout``)
for _name in ("inception_resnet_v1", "inception_resnet_v1_nobn", "sqnxt23v5_w1", "sqnxt23v5_w1_gdc", "sqnxt23v5_w2",
              "sqnxt23v5_w2_gdc"):
    BACKBONES[_name].accepts_dropout = True


def list_backbones() -> list[str]:
    return sorted(BACKBONES)


def build_backbone(name: str, **kwargs) -> keras.Model:
    """Build the backbone registered as ``name`` (keyword arguments go to its builder)."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; known: {', '.join(list_backbones())}"
        ) from None
    return builder(**kwargs)
