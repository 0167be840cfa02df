"""Fit-loop glue: run folders, callbacks, presets applied to data and models."""

from kerasface.training.callbacks import VerificationCallback
from kerasface.training.pairs import RunResult, build_verifier, resolve_pair_lists, train_pairs

__all__ = ["RunResult", "VerificationCallback", "build_verifier", "resolve_pair_lists", "train_pairs"]
