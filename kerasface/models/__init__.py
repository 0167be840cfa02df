"""Backbones, the Siamese verifier, the triplet graph, margin heads, the distillation (teacher-student) model,
the registry and the profiler."""

from kerasface.models.distillation import DistillationModel, Report002Model
from kerasface.models.dlib_resnet import ChannelAffine, ZeroPadAdd, dlib_resnet_v1
from kerasface.models.embedding_layers import stack_embedding_layers, with_projection
from kerasface.models.facenet_nn2 import FaceNetNN2, facenet_nn2
from kerasface.models.heads import MarginHead, classification_model
from kerasface.models.inception_resnet import inception_resnet_v1
from kerasface.models.profile import ModelProfile, format_profile, profile_model
from kerasface.models.registry import BACKBONES, build_backbone, list_backbones
from kerasface.models.resnet import ResNetBasic, resnet18, resnet34
from kerasface.models.siamese import SiameseVerifier
from kerasface.models.squeezenext import sqnxt23v5, sqnxt23v5_w1, sqnxt23v5_w2
from kerasface.models.thinresnet import (
    ThinResNet,
    thin_resnet34,
    thin_resnet50,
    thin_resnet50_v2,
)
from kerasface.models.triplet import TripletModel, get_embedding_model
from kerasface.models.vargfacenet import (
    VarGFaceNet,
    vargfacenet,
    vargfacenet_reduced,
    vargfacenet_tiny,
)

__all__ = [
    "BACKBONES",
    "ChannelAffine",
    "DistillationModel",
    "FaceNetNN2",
    "MarginHead",
    "ModelProfile",
    "Report002Model",
    "ResNetBasic",
    "SiameseVerifier",
    "ThinResNet",
    "TripletModel",
    "VarGFaceNet",
    "ZeroPadAdd",
    "build_backbone",
    "classification_model",
    "dlib_resnet_v1",
    "facenet_nn2",
    "format_profile",
    "get_embedding_model",
    "inception_resnet_v1",
    "list_backbones",
    "profile_model",
    "resnet18",
    "resnet34",
    "sqnxt23v5",
    "sqnxt23v5_w1",
    "sqnxt23v5_w2",
    "stack_embedding_layers",
    "thin_resnet34",
    "thin_resnet50",
    "thin_resnet50_v2",
    "vargfacenet",
    "vargfacenet_reduced",
    "vargfacenet_tiny",
    "with_projection",
]
