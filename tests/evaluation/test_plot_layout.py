"""curves.png and cases.png as a newcomer reads them (issue 16): integer epoch ticks, the loss panel first
for every trainer, no blank band between the two rows of cases.png."""

from __future__ import annotations

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest

from kerasface.data.lfw import parse_pairs
from kerasface.data.sources import open_image_source
from kerasface.evaluation import plots
from kerasface.evaluation.baselines import raw_pixels
from kerasface.evaluation.verification import score_pairs
from kerasface.training.tasks.triplet_monitor import plot_triplet_history


@pytest.fixture
def kept_figures(monkeypatch):
    """The figures the plotting functions close after saving, kept open for inspection."""
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    yield figs
    monkeypatch.undo()
    plt.close("all")


def _epoch_ticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_curves_have_integer_epoch_ticks_and_the_loss_panel_first(tmp_path, kept_figures):
    history = {"accuracy": [0.5, 0.6, 0.7], "loss": [0.9, 0.7, 0.6], "val_loss": [1.0, 0.8, 0.7]}
    plots.plot_history(history, tmp_path / "pairs.png", title="pairs")
    triplet = {"loss": [0.3, 0.2, 0.1], "probe_mean_distance": [1.0, 1.1, 1.2], "verify_auc": [0.6, 0.7, 0.8]}
    plot_triplet_history(triplet, tmp_path / "triplet.png", title="triplet")
    assert len(kept_figures) == 2
    for fig in kept_figures:
        axes = fig.axes
        assert "loss" in axes[0].get_title()                     # one panel order: the loss first
        for ax in axes:
            ticks = _epoch_ticks(ax)
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert [ax.get_ylabel() for ax in kept_figures[0].axes] == ["loss", "accuracy"]


def test_cases_png_has_no_blank_band_between_its_rows(sample_dir, tmp_path):
    pairs = parse_pairs(sample_dir / "pairsVal.txt")
    ps = score_pairs(raw_pixels(32), sample_dir, pairs, verbose=0)
    path = tmp_path / "cases.png"
    plots.plot_case_pairs(ps, open_image_source(sample_dir), path, threshold=float(np.median(ps.scores)), n=6,
                          size=64)
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    face_rows = (grey < 250).mean(axis=1) > 0.5      # pixel rows crossed by the row of face pictures
    # the two rows of faces fill more than half of the picture (0.39 with the old blank band)
    assert face_rows.mean() > 0.5, face_rows.mean()
