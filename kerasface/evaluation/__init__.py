"""Evaluation: verification metrics (10-fold accuracy, ROC, AUC, EER, TAR@FAR), embeddings, plots.

``metrics`` is plain NumPy; ``embeddings`` and ``verification`` load TensorFlow.
Names are re-exported lazily so ``kerasface.evaluation.metrics`` stays light.
"""

from __future__ import annotations

from kerasface._lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
