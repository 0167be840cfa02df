"""Shared fixtures: the bundled LFW sample (always present) and the full shared LFW (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_LFW = SHARED / "lfw"
SAMPLE = REPO / "data" / "lfw_sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """``data/lfw_sample``: ``lfw/<Name>/...`` images plus ``pairsTrain.txt`` / ``pairsVal.txt``."""
    assert (SAMPLE / "lfw").is_dir(), f"bundled sample missing: {SAMPLE} (run data/make_sample.py)"
    return SAMPLE


@pytest.fixture(scope="session")
def shared_lfw() -> Path:
    """The full shared LFW folder (``lfw.zip`` and the official lists); skips when absent."""
    if not (SHARED_LFW / "lfw.zip").is_file():
        pytest.skip(f"full LFW not available at {SHARED_LFW}")
    return SHARED_LFW
