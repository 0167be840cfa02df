"""Evaluation: verification metrics (10-fold accuracy, ROC, AUC, EER, TAR@FAR), embeddings, plots.

Modules, from the bottom up: ``settings`` (:class:`EvalSettings`, plain Python), ``metrics``
and ``cases`` (NumPy), ``kinds`` (which kind of model, keras), ``embeddings`` (TensorFlow),
``plots`` (matplotlib; every picture), ``verification`` (score pairs, metrics, report).
Names are re-exported lazily so ``kerasface.evaluation.metrics`` stays light.
"""

from __future__ import annotations

from kerasface._lazy import lazy_exports

_EXPORTS = {
    "plot_history": "plots",
    "plot_roc": "plots",
    "plot_case_pairs": "plots",
    "plot_case_study": "plots",
    "CasePair": "cases",
    "hardest_cases": "cases",
    "hardest_pairs": "cases",
    "pairwise_l2": "cases",
    "EvalSettings": "settings",
    "METRICS": "settings",
    "NORMALIZATIONS": "settings",
    "MODEL_KINDS": "kinds",
    "model_kind": "kinds",
    "verifier_head": "kinds",
    "roc_curve": "metrics",
    "roc_auc": "metrics",
    "equal_error_rate": "metrics",
    "tar_at_far": "metrics",
    "best_threshold": "metrics",
    "kfold_accuracy": "metrics",
    "verification_metrics": "metrics",
    "Embeddings": "embeddings",
    "extract_embeddings": "embeddings",
    "embedding_submodel": "kinds",
    "PairScores": "verification",
    "VerificationResult": "verification",
    "score_pairs": "verification",
    "score_embedding_pairs": "verification",
    "score_verifier_pairs": "verification",
    "heldout_accuracy": "verification",
    "evaluate_pairs": "verification",
    "evaluate_to_dir": "verification",
    "write_report": "verification",
    "write_scores": "verification",
    "pairs_and_images": "verification",
    "raw_pixels": "baselines",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
