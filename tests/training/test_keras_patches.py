"""kerasface.training.keras_patches: the Keras private-API work-arounds are still needed (and still fit Keras).

These tests FAIL when the installed Keras changes: either the private names the
patch replaces are gone (adapt or delete the patch), or Keras itself stopped
reducing scalar logs along axis 0 / reducing the distributed first batch under a
multi-worker strategy (tensorflow/tensorflow#72388 fixed: delete the patch).
"""

from __future__ import annotations

import inspect

import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as tft

from kerasface.training.keras_patches import keras_originals

DELETE = ("Keras no longer needs kerasface/training/keras_patches.py's work-around of tensorflow/tensorflow#72388: "
          "delete patch_keras_for_multiworker, its call in training/distribute.py and this test")


def test_the_private_names_the_patch_replaces_still_exist():
    for name in ("reduce_per_replica", "_collective_all_reduce_multi_worker", "_is_per_replica_instance"):
        assert hasattr(tft, name), f"keras.src.backend.tensorflow.trainer.{name} is gone: adapt keras_patches.py"
    for name in ("_maybe_symbolic_build", "_symbolic_build"):
        assert hasattr(tft.TensorFlowTrainer, name), f"TensorFlowTrainer.{name} is gone: adapt keras_patches.py"


class _RecordingStrategy:
    """Stands in for a multi-worker strategy: records what Keras asks it to reduce."""

    def __init__(self):
        self.calls = []

    def reduce(self, op, value, axis=None):
        self.calls.append((op, tuple(value.shape), axis))
        return value


def test_keras_still_reduces_scalar_logs_along_axis_0_on_multiworker(monkeypatch):
    """The failure of tensorflow/tensorflow#72388: ``strategy.reduce("MEAN", scalar, axis=0)``, which a real
    MultiWorkerMirroredStrategy rejects ("Invalid reduction dimension 0 for input with 0 dimensions")."""
    monkeypatch.setattr(tft, "_collective_all_reduce_multi_worker", lambda strategy: True)
    strategy = _RecordingStrategy()
    keras_originals()["reduce_per_replica"]({"loss": tf.constant(1.5)}, strategy, "auto")
    if strategy.calls != [("MEAN", (), 0)]:
        pytest.fail(f"{DELETE} (Keras now reduces a scalar log with {strategy.calls})")


def test_keras_still_reduces_the_distributed_first_batch_in_its_symbolic_build():
    source = inspect.getsource(keras_originals()["_maybe_symbolic_build"])
    if "distribute_strategy.reduce(" not in source:
        pytest.fail(f"{DELETE} (TensorFlowTrainer._maybe_symbolic_build no longer reduces the first batch)")
