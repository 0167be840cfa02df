"""Evaluation: verification metrics (10-fold accuracy, ROC, AUC, EER, TAR@FAR), embeddings, plots.

``metrics`` is plain NumPy; ``embeddings`` and ``verification`` load TensorFlow.
Names are re-exported lazily so ``kerasface.evaluation.metrics`` stays light.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "plot_history": "plots",
    "plot_roc": "plots",
    "plot_case_pairs": "plots",
    "roc_curve": "metrics",
    "roc_auc": "metrics",
    "equal_error_rate": "metrics",
    "tar_at_far": "metrics",
    "best_threshold": "metrics",
    "kfold_accuracy": "metrics",
    "verification_metrics": "metrics",
    "Embeddings": "embeddings",
    "extract_embeddings": "embeddings",
    "embedding_submodel": "embeddings",
    "PairScores": "verification",
    "VerificationResult": "verification",
    "score_pairs": "verification",
    "evaluate_pairs": "verification",
    "evaluate_to_dir": "verification",
    "write_report": "verification",
    "raw_pixels": "baselines",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
