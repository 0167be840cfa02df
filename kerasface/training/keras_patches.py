"""Work-arounds for Keras private APIs, kept in this one module: delete each once Keras no longer needs it.

``patch_keras_for_multiworker``: two Keras 3 (3.15) failures of ``fit`` under
``tf.distribute.MultiWorkerMirroredStrategy``, upstream
`tensorflow/tensorflow#72388 <https://github.com/tensorflow/tensorflow/issues/72388>`_
("tf.distribute and keras 3 incompatibility: ValueError: Invalid reduction
dimension 0 for input with 0 dimensions"; closed as stale, not fixed in Keras):

1. ``keras.src.backend.tensorflow.trainer.reduce_per_replica`` reduces every
   scalar log of a training step with ``strategy.reduce("MEAN", v, axis=0)`` on
   multi-worker collective strategies, which fails for a 0-d value: scalar logs
   are averaged over the replicas instead (``axis=None``);
2. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first distributed
   input batch with the strategy (which cannot convert a ``PerReplica`` batch):
   the pre-build takes this worker's first local batch instead.

Both act only when the strategy is a multi-worker collective one.
``tests/training/test_keras_patches.py`` fails once the installed Keras behaves,
saying to delete this module.
"""

from __future__ import annotations

__all__ = ["patch_keras_for_multiworker", "keras_originals"]

_ORIGINALS: dict = {}


def keras_originals() -> dict:
    """Keras's own ``reduce_per_replica`` and ``_maybe_symbolic_build`` (as they were before any patch)."""
    from keras.src.backend.tensorflow import trainer as tft

    return {"reduce_per_replica": _ORIGINALS.get("reduce_per_replica", tft.reduce_per_replica),
            "_maybe_symbolic_build": _ORIGINALS.get("_maybe_symbolic_build",
                                                    tft.TensorFlowTrainer._maybe_symbolic_build)}


def patch_keras_for_multiworker() -> None:
    """Apply both work-arounds of tensorflow/tensorflow#72388 (once per process; see the module docstring)."""
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tft

    if getattr(tft, "_kerasface_multiworker_patch", False):
        return
    original_reduce = tft.reduce_per_replica
    original_build = tft.TensorFlowTrainer._maybe_symbolic_build
    _ORIGINALS.update(reduce_per_replica=original_reduce, _maybe_symbolic_build=original_build)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tft._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None) if tft._is_per_replica_instance(v) or
                v.shape.rank == 0 else strategy.reduce("MEAN", v, axis=0), values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or iterator is None or not tft._collective_all_reduce_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda x: strategy.experimental_local_results(x)[0]
                if isinstance(x, tf.distribute.DistributedValues) else x, batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tft.reduce_per_replica = reduce_per_replica
    tft.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tft._kerasface_multiworker_patch = True
