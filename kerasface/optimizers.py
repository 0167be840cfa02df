"""Adam and AdamW with each variable's update as one fused kernel.

Keras 3 writes Adam's update of a variable as about 39 graph operations (the step's powers of beta,
the bias-corrected rate, two moment updates, the square root, the division, the assignments). A
network with 347 variables (the VarGFaceNet verifier) then carries 13,500 optimizer operations in
its training step: 40 % of the graph that ``fit`` traces and grappler optimizes before the first
step runs. :class:`FusedAdam` and :class:`FusedAdamW` compute the same update with TensorFlow's
``ResourceApplyAdam`` kernel: one operation per variable, its scalar inputs computed once per update
(docs/performance.md, "Adam as one kernel per variable").

The update is Keras's, to float rounding (``tests/test_optimizers.py`` checks both against a NumPy
Adam): ``m += (g - m)(1 - b1)``, ``v += (g^2 - v)(1 - b2)``,
``w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``. Everything around the update is Keras's
own optimizer code, not overridden: learning-rate schedules, weight decay (AdamW's, applied before the
update), gradient clipping, loss scaling, EMA, gradient accumulation and ``tf.distribute`` strategies
(tested here: a schedule, AdamW's decay, save and resume, a MirroredStrategy).
Keras's update runs instead on other backends, with ``amsgrad=True`` and for sparse gradients.
Both are registered, so a compiled model saved with either loads with ``import kerasface``.
"""

from __future__ import annotations

import keras

__all__ = ["FusedAdam", "FusedAdamW"]


def _register(cls):
    return keras.saving.register_keras_serializable(package="kerasface")(cls)


class _FusedAdamUpdate:
    """``update_step`` as TensorFlow's ``ResourceApplyAdam``; Keras's where that kernel does not apply.

    The kernel's scalar inputs (the step's powers of beta, the rate, beta, epsilon) are computed once per
    update of all variables and dtype, not once per variable."""

    _fused_scalars = None  # dtype -> the kernel's scalar inputs, during one update of all variables

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self._fused_scalars = {}
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._fused_scalars = None

    def _scalars(self, dtype, learning_rate):
        import tensorflow as tf

        cache = self._fused_scalars
        if cache is not None and dtype in cache:
            return cache[dtype]
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        scalars = dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                       lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                       epsilon=tf.cast(self.epsilon, dtype))
        if cache is not None:
            cache[dtype] = scalars
        return scalars

    def update_step(self, gradient, variable, learning_rate):
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        import tensorflow as tf  # the TensorFlow backend is running: already imported

        if isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        tf.raw_ops.ResourceApplyAdam(var=variable.handle, m=m.handle, v=v.handle,
                                     grad=tf.cast(gradient, dtype), use_locking=False,
                                     **self._scalars(dtype, learning_rate))


@_register
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` (same arguments, defaults and config) with a fused update per variable."""


@_register
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` (same arguments, defaults and config) with a fused update per variable;
    the decoupled weight decay is Keras's, applied before the update."""
