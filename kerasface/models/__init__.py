"""Backbones, the Siamese verifier, the triplet graph, the registry and the profiler."""

from kerasface.models.facenet_nn2 import FaceNetNN2, facenet_nn2
from kerasface.models.profile import ModelProfile, format_profile, profile_model
from kerasface.models.registry import BACKBONES, build_backbone, list_backbones
from kerasface.models.siamese import SiameseVerifier
from kerasface.models.triplet import TripletModel, get_embedding_model
from kerasface.models.vargfacenet import VarGFaceNet, vargfacenet, vargfacenet_reduced, vargfacenet_tiny

__all__ = [
    "BACKBONES",
    "FaceNetNN2",
    "ModelProfile",
    "SiameseVerifier",
    "TripletModel",
    "VarGFaceNet",
    "build_backbone",
    "facenet_nn2",
    "format_profile",
    "get_embedding_model",
    "list_backbones",
    "profile_model",
    "vargfacenet",
    "vargfacenet_reduced",
    "vargfacenet_tiny",
]
