"""A failed start does not poison its run folder (issue 16, section 6).

A run that fails before its first epoch (bad data, a wrong value found while loading) leaves nothing to
protect: the corrected command with the same ``--run-dir`` and other settings starts, and without
``--run-dir`` no junk folder is left behind.  A folder with a finished epoch is still protected.
"""

from __future__ import annotations

import pytest
from test_runner import ToyTask  # tests/training is on sys.path (rootdir imports)

from kerasface.training.runner import run_training


class BadDataTask(ToyTask):
    def prepare(self, run_dir, verbose, runtime):
        raise ValueError("no images found in the data")


def test_the_corrected_rerun_replaces_a_folder_without_a_finished_epoch(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="no images found"):
        run_training(BadDataTask(tmp_path, lr_name="first_try"), run_dir=run_dir, verbose=0)
    assert (run_dir / "config.json").is_file()       # the failed start wrote its settings...
    result = run_training(ToyTask(tmp_path), run_dir=run_dir, verbose=0)  # ...other settings: accepted
    assert result.metrics["complete"] is True
    # a folder with finished epochs keeps its protection
    with pytest.raises(ValueError, match=r"holds a run with other settings \(lr: 0.01 -> None; other: None"):
        run_training(ToyTask(tmp_path, lr_name="other"), run_dir=run_dir, verbose=0)


def test_a_failed_start_without_run_dir_leaves_no_folder(tmp_path):
    for _ in range(2):
        with pytest.raises(ValueError, match="no images found"):
            run_training(BadDataTask(tmp_path), verbose=0)
    assert list((tmp_path / "runs").iterdir()) == []
