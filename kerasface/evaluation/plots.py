"""Training curves (train vs validation), as the reports draw them."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kerasface.io import atomic_path  # noqa: E402

__all__ = ["plot_history"]


def plot_history(history: dict, path, title: str = "", metrics=("accuracy", "loss")) -> None:
    """Save one panel per metric, train and ``val_`` curves against the epoch."""
    present = [m for m in metrics if m in history]
    if not present:
        raise ValueError(f"history has none of {metrics}: {sorted(history)}")
    fig, axes = plt.subplots(1, len(present), figsize=(5.5 * len(present), 4), squeeze=False)
    for ax, m in zip(axes[0], present):
        epochs = range(1, len(history[m]) + 1)
        ax.plot(epochs, history[m], "o-", label=f"train {m}")
        if f"val_{m}" in history:
            ax.plot(range(1, len(history[f"val_{m}"]) + 1), history[f"val_{m}"], "s-",
                    label=f"validation {m}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(m)
        ax.set_title(f"training and validation {m}")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
