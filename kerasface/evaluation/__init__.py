"""Evaluation: plots of curves (more in later issues: ROC, EER, 10-fold)."""

from kerasface.evaluation.plots import plot_history

__all__ = ["plot_history"]
