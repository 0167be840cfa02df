"""Fit-loop glue: run folders, callbacks, presets applied to data and models."""

from kerasface.training.callbacks import VerificationCallback
from kerasface.training.classify import train_classifier
from kerasface.training.optim import GradualUnfreezing, cosine_warm_restarts, freeze_first, make_optimizer
from kerasface.training.pairs import build_verifier, resolve_pair_lists, train_pairs
from kerasface.training.run_folder import RunFolderWriter, RunResult
from kerasface.training.triplet import train_triplet

__all__ = ["GradualUnfreezing", "RunFolderWriter", "RunResult", "VerificationCallback", "build_verifier", "resolve_pair_lists",
           "train_classifier", "train_pairs", "train_triplet", "cosine_warm_restarts", "freeze_first", "make_optimizer"]
