"""Backbones, the Siamese verifier, the registry and the profiler."""

from kerasface.models.profile import ModelProfile, format_profile, profile_model
from kerasface.models.registry import BACKBONES, build_backbone, list_backbones
from kerasface.models.siamese import SiameseVerifier
from kerasface.models.vargfacenet import VarGFaceNet, vargfacenet, vargfacenet_reduced, vargfacenet_tiny

__all__ = [
    "BACKBONES",
    "ModelProfile",
    "SiameseVerifier",
    "VarGFaceNet",
    "build_backbone",
    "format_profile",
    "list_backbones",
    "profile_model",
    "vargfacenet",
    "vargfacenet_reduced",
    "vargfacenet_tiny",
]
