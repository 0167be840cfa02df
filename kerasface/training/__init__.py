"""Fit-loop glue: the one training skeleton (:mod:`~kerasface.training.runner`), its tasks, run folders, callbacks."""

from kerasface.training.callbacks import VerificationCallback
from kerasface.training.optim import GradualUnfreezing, cosine_warm_restarts, freeze_first, make_optimizer
from kerasface.training.run_folder import RunFolderWriter, RunResult
from kerasface.training.tasks.classify import train_classifier
from kerasface.training.tasks.pairs import build_verifier, train_pairs
from kerasface.training.tasks.triplet import train_triplet

__all__ = ["GradualUnfreezing", "RunFolderWriter", "RunResult", "VerificationCallback", "build_verifier",
           "train_classifier", "train_pairs", "train_triplet", "cosine_warm_restarts", "freeze_first",
           "make_optimizer"]
