"""Small registered layers shared by every kerasface model.

Everything here uses ``keras.ops``, so it runs under any Keras 3 backend
(TensorFlow, JAX, PyTorch). Two measured exceptions call TensorFlow directly when it is
the backend, with Keras's own code on the others: :class:`FusedBatchNormalization` (TF's
fused batch-norm kernel) and :class:`FusedPReLU` (PReLU as two small XLA-compiled kernels).
Every layer is registered under the ``kerasface`` package with a complete ``get_config``: a
saved ``.keras`` model loads with ``import kerasface`` and the default ``safe_mode=True``.
"""

from __future__ import annotations

import contextlib
import functools
import math

import keras
from keras import ops

from kerasface.config import GROUP_CONV_PATHS
from kerasface.face_spec import FaceSpec

__all__ = [
    "FusedBatchNormalization",
    "FusedPReLU",
    "GroupConv2D",
    "AbsoluteDifference",
    "L2Normalize",
    "L2Pooling2D",
    "LocalResponseNormalization",
    "EuclideanDistance",
    "StackDistances",
    "FacePreprocessing",
    "carried_face_spec",
    "find_face_preprocessing",
    "fused_layers_addressed_as_keras",
    "load_weights",
    "resolve_group_conv_implementation",
    "set_group_conv_implementation",
]

_IMPLEMENTATIONS = GROUP_CONV_IMPLEMENTATIONS = GROUP_CONV_PATHS  # declared once, in the settings schema


def _register(cls):
    return keras.saving.register_keras_serializable(package="kerasface")(cls)


@functools.lru_cache(maxsize=1)
def cpu_has_avx512() -> bool:
    """Whether this machine's CPU has AVX-512 (``avx512f`` in Linux's ``/proc/cpuinfo``).

    True when that cannot be read (another OS): the block rule measured first, on AVX-512 CPUs, then applies.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx512f" in line.split()
    except OSError:
        pass
    return True


def group_conv_block_groups(groups: int, in_per_group: int, out_area: int | None, *,
                            avx512: bool | None = None) -> int:
    """Groups folded into one dense convolution by the ``"blockdiag"`` path (a divisor of ``groups``).

    Measured on TF 2.21's CPU (oneDNN) kernels, forward + backward, VarGFaceNet's shapes
    (``benchmarks/bench_group_conv.py --blocks``): a dense convolution with a block-diagonal kernel
    does ``k`` times the grouped MACs but runs oneDNN's fast dense kernels, and fewer, larger
    ops. Large maps want few, narrow blocks (the wasted MACs dominate); small maps want
    wide blocks (per-op costs dominate). How wide depends on the CPU's vector width
    (``avx512``; None reads it from this machine, :func:`cpu_has_avx512`):

    * AVX-512: up to 40 input channels per block in any case when there are at most 5 groups,
      else about 16 input channels per block on output maps of 14x14 and more, about 64 on smaller ones.
    * without it (AVX2, half the multiply-adds a cycle, so wasted MACs cost twice as much): 8 input
      channels per block on 14x14 and more (one group per block: the ``"split"`` path for
      VarGFaceNet's 8 channels per group), 16 on smaller maps.
    """
    groups = int(groups)
    if avx512 is None:
        avx512 = cpu_has_avx512()
    large = out_area is None or out_area >= 196
    if avx512:
        if groups <= 5 and groups * in_per_group <= 40:
            return groups
        target = 16 if large else 64
    else:
        target = 8 if large else 16
    best = 1
    for k in range(1, groups + 1):
        if groups % k == 0 and k * in_per_group <= target:
            best = k
    return best


def resolve_group_conv_implementation(implementation: str = "auto", groups: int = 2, *,
                                      input_shape=None, kernel_size=None, padding=None) -> str:
    """Return the concrete grouped-convolution path for ``implementation``.

    ``"auto"`` avoids ``"native"`` on the TensorFlow backend when no GPU is
    visible: TF 2.21's CPU gradient of ``Conv2D(groups>1)`` is 40-200x slower
    than the rewrites (tensorflow#49147; numbers in ``docs/performance.md``).
    There it picks ``"matmul"`` for a ``"valid"`` convolution whose kernel covers
    the whole input map (one output pixel: VarGFaceNet's embedding conv, then a
    batched matmul over the groups) and ``"blockdiag"`` otherwise (see
    :func:`group_conv_block_groups`; with one group per block it runs as ``"split"``).
    ``input_shape``, ``kernel_size`` and ``padding`` are the layer's; without them
    the choice is ``"blockdiag"``. Everywhere else (TF on a GPU, JAX, PyTorch) it
    picks ``"native"``.
    """
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(
            f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}"
        )
    if implementation != "auto":
        return implementation
    if keras.backend.backend() != "tensorflow":
        return "native"
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # pragma: no cover - very old Keras
        devices = []
    has_gpu = any(str(d).lower().startswith("gpu") for d in devices)
    if has_gpu:
        return "native"
    if (input_shape is not None and kernel_size is not None and padding == "valid"
            and tuple(input_shape[1:3]) == tuple(_pair(kernel_size))):
        return "matmul"
    return "blockdiag"


def set_group_conv_implementation(model, implementation: str) -> int:
    """Make every :class:`GroupConv2D` in ``model`` (nested models included) run ``implementation`` from its
    next trace: the path is not part of the weights, so a loaded model can switch. Returns how many."""
    if implementation not in _IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}")
    n = 0
    for layer in model.layers:
        if isinstance(layer, GroupConv2D):
            layer.implementation = implementation
            n += 1
        elif hasattr(layer, "layers"):
            n += set_group_conv_implementation(layer, implementation)
    return n


@_register
class GroupConv2D(keras.layers.Layer):
    """2-D convolution with ``groups`` channel groups and a selectable kernel path.

    The kernel has the layout of ``keras.layers.Conv2D(groups=G)``:
    ``(kh, kw, in_channels // G, filters)``, output channels of group ``g``
    being ``filters // G * g ... filters // G * (g + 1) - 1``. Whatever path
    runs, the weights and the result are the same, so a model trained on a CPU
    with the fast path loads and runs unchanged on a GPU with the native one.

    Paths (``implementation``):

    * ``"native"``: one ``ops.conv`` call (the backend's grouped conv).
    * ``"depthwise"``: a depthwise conv with depth multiplier
      ``M = filters // G`` over all input channels, then a reshape and a sum
      over the ``in_channels // G`` inputs of each group. Same MACs as the
      grouped conv; an intermediate ``in_channels // G`` times larger than the
      output. Fast on TF's CPU kernels in both directions. Unequal row and column
      strides (which TF's CPU depthwise kernel refuses) run the ``"split"`` path.
    * ``"split"``: ``G`` dense convolutions on channel slices, concatenated.
    * ``"blockdiag"``: the groups folded into blocks of ``k = block_groups``
      groups; each block is one dense convolution whose kernel is block-diagonal
      (zeros between groups), so it does ``k`` times the grouped MACs on the fast
      dense kernels. ``k = 1`` is ``"split"``, ``k = G`` one dense convolution.
      ``block_groups=None`` picks ``k`` by :func:`group_conv_block_groups`.
    * ``"matmul"``: the convolution as one batched matrix product over the groups
      (``einsum``) on patches gathered from shifted slices. With a ``"valid"``
      kernel that covers the whole input (one output pixel) the patches are the
      input itself: a reshape and one einsum. Needs static height and width
      (otherwise it runs ``"blockdiag"``).
    * ``"auto"``: see :func:`resolve_group_conv_implementation` (the path is
      chosen when the layer is traced, not stored: it is not part of the weights).
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="same",
        groups=1,
        use_bias=False,
        implementation="auto",
        block_groups=None,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        if implementation not in _IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {_IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.implementation = implementation
        self.block_groups = None if block_groups is None else int(block_groups)
        if self.block_groups is not None and (self.block_groups < 1 or self.groups % self.block_groups):
            raise ValueError(
                f"block_groups={block_groups} must be a positive divisor of groups={self.groups}"
            )
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if self.filters % self.groups:
            raise ValueError(
                f"filters={self.filters} is not divisible by groups={self.groups}"
            )

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        if in_channels % self.groups:
            raise ValueError(
                f"{self.name}: input channels {in_channels} are not divisible by "
                f"groups={self.groups}"
            )
        self.in_channels = in_channels
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)
            if self.use_bias
            else None
        )

    def call(self, inputs):
        path = resolve_group_conv_implementation(
            self.implementation, self.groups, input_shape=tuple(inputs.shape),
            kernel_size=self.kernel_size, padding=self.padding)
        if path == "depthwise" and self.strides[0] != self.strides[1]:
            path = "split"  # TF's CPU depthwise kernel refuses unequal row/column strides
        if path == "matmul" and (inputs.shape[1] is None or inputs.shape[2] is None):
            path = "blockdiag"  # the patches need a static map size
        if self.groups == 1 or path == "native":
            out = ops.conv(inputs, self.kernel, strides=self.strides, padding=self.padding)
        elif path == "depthwise":
            out = self._depthwise(inputs)
        elif path == "matmul":
            out = self._matmul(inputs)
        elif path == "blockdiag":
            out = self._blockdiag(inputs, self.block_size(inputs.shape))
        else:
            out = self._split(inputs)
        if self.bias is not None:
            out = out + self.bias
        return out

    def _depthwise(self, inputs):
        g = self.groups
        cpg = self.in_channels // g  # input channels per group
        m = self.filters // g  # output channels per group
        kh, kw = self.kernel_size
        # (kh, kw, cpg, g*m) -> (kh, kw, g, cpg, m) -> (kh, kw, g*cpg, m)
        k = ops.reshape(self.kernel, (kh, kw, cpg, g, m))
        k = ops.transpose(k, (0, 1, 3, 2, 4))
        k = ops.reshape(k, (kh, kw, g * cpg, m))
        y = ops.depthwise_conv(inputs, k, strides=self.strides, padding=self.padding)
        if cpg == 1:
            return y
        shape = ops.shape(y)
        y = ops.reshape(y, (shape[0], shape[1], shape[2], g, cpg, m))
        y = ops.sum(y, axis=4)
        return ops.reshape(y, (shape[0], shape[1], shape[2], self.filters))

    def block_size(self, input_shape) -> int:
        """Groups per dense convolution of the ``"blockdiag"`` path for inputs of ``input_shape``."""
        if self.block_groups is not None:
            return self.block_groups
        h = _out_len(input_shape[1], self.kernel_size[0], self.strides[0], self.padding)
        w = _out_len(input_shape[2], self.kernel_size[1], self.strides[1], self.padding)
        area = None if h is None or w is None else h * w
        return group_conv_block_groups(self.groups, self.in_channels // self.groups, area)

    def block_kernels(self, k):
        """The kernel as ``G // k`` block-diagonal dense kernels of ``k`` groups: ``(kh, kw, G // k, k*cpg, k*m)``."""
        g = self.groups
        cpg = self.in_channels // g
        m = self.filters // g
        nb = g // k
        kh, kw = self.kernel_size
        # (kh, kw, cpg, g*m) -> (kh, kw, nb, cpg, k, m) -> block-diagonal (kh, kw, nb, k*cpg, k*m)
        kern = ops.reshape(self.kernel, (kh, kw, cpg, nb, k, m))
        kern = ops.expand_dims(ops.transpose(kern, (0, 1, 3, 2, 4, 5)), 3)  # (kh, kw, nb, 1, cpg, k, m)
        # the identity as a constant, not ops.eye's MatrixDiag and its inputs in every traced call
        eye = ops.convert_to_tensor([[float(i == j) for j in range(k)] for i in range(k)], dtype=kern.dtype)
        eye = ops.reshape(eye, (1, 1, 1, k, 1, k, 1))
        return ops.reshape(kern * eye, (kh, kw, nb, k * cpg, k * m))

    def _blockdiag(self, inputs, k):
        if k == 1:
            return self._split(inputs)
        nb = self.groups // k  # blocks
        kern = self.block_kernels(k)  # (kh, kw, nb, K, M)
        kh, kw, _, cin, cout = kern.shape
        if nb == 1:
            return ops.conv(inputs, ops.reshape(kern, (kh, kw, cin, cout)), strides=self.strides, padding=self.padding)
        # ops.split, not nb strided slices, for the input and the kernels alike: the gradient of a split is one
        # concatenation, while each slice's gradient is a zero tensor of the whole input with the slice
        # written in, summed afterwards (AddN), and each slice adds 4-8 operations to the traced graph
        xs = ops.split(inputs, nb, axis=-1)
        ks = ops.split(ops.reshape(ops.transpose(kern, (0, 1, 3, 2, 4)), (kh, kw, cin, nb * cout)), nb, axis=-1)
        outs = [ops.conv(x, kk, strides=self.strides, padding=self.padding) for x, kk in zip(xs, ks)]
        return ops.concatenate(outs, axis=-1)

    def _matmul(self, inputs):
        g = self.groups
        cpg = self.in_channels // g
        m = self.filters // g
        kh, kw = self.kernel_size
        sh, sw = self.strides
        h, w = int(inputs.shape[1]), int(inputs.shape[2])
        oh, ow = _out_len(h, kh, sh, self.padding), _out_len(w, kw, sw, self.padding)
        kern = ops.reshape(self.kernel, (kh * kw, cpg, g, m))
        if self.padding == "valid" and (h, w) == (kh, kw):
            patches = ops.reshape(inputs, (-1, kh * kw, g, cpg))  # the whole map is the one patch
        else:
            x = inputs
            if self.padding == "same":  # TF's convention: the odd pixel of padding goes after
                ph = max((oh - 1) * sh + kh - h, 0)
                pw = max((ow - 1) * sw + kw - w, 0)
                x = ops.pad(x, [[0, 0], [ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]])
            taps = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
                    for i in range(kh) for j in range(kw)]
            patches = ops.reshape(ops.stack(taps, axis=3), (-1, kh * kw, g, cpg))
        out = ops.einsum("ntgc,tcgm->ngm", patches, kern)
        return ops.reshape(out, (-1, oh, ow, self.filters))

    def _split(self, inputs):
        g = self.groups  # split, not slices: see _blockdiag
        outs = [ops.conv(x, k, strides=self.strides, padding=self.padding)
                for x, k in zip(ops.split(inputs, g, axis=-1), ops.split(self.kernel, g, axis=-1))]
        return ops.concatenate(outs, axis=-1)

    def compute_output_shape(self, input_shape):
        h, w = input_shape[1], input_shape[2]
        return (input_shape[0], _out_len(h, self.kernel_size[0], self.strides[0], self.padding),
                _out_len(w, self.kernel_size[1], self.strides[1], self.padding), self.filters)

    def macs(self, output_shape) -> int:
        """Multiply-accumulates of one sample for the given output shape."""
        kh, kw = self.kernel_size
        return int(output_shape[1] * output_shape[2] * self.filters * kh * kw
                   * (self.in_channels // self.groups))

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            groups=self.groups,
            use_bias=self.use_bias,
            implementation=self.implementation,
            block_groups=self.block_groups,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer)
            if self.kernel_regularizer
            else None,
        )
        return config


@_register
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step runs as one fused kernel on TensorFlow.

    Keras 3 computes a training-mode batch normalisation from separate ``keras.ops``
    (two reductions for the moments, then a scale and a shift) and differentiates
    each of them: about ten passes over the activation per layer, forward and
    backward. Keras 2 (``tf.keras``) used TensorFlow's ``FusedBatchNormV3`` (oneDNN on
    this CPU), which does both directions in one op each: on VarGFaceNet's activations
    it is 1.2-2.7x faster per layer, forward and backward, 1.9x summed over the
    network's 79 batch norms, and the verifier trains 1.49x faster (quiet; 1.13x
    on a loaded machine; docs/performance.md, "Batch normalisation"). The graph also has about thirty
    fewer ops per layer to trace.

    Same weights (``gamma``, ``beta``, ``moving_mean``, ``moving_variance``), config and
    results as the parent: the fused kernel is used for a 4-D channels-last input on
    the TensorFlow backend without renorm or a mask, in training mode (not synchronised)
    and in inference or when frozen (the moving statistics, one pass where Keras does a
    multiply and an add: VarGFaceNet's backbone infers 1.18x faster); the training
    kernel's unbiased batch variance is scaled back to the biased one Keras averages
    into ``moving_variance``. Everything else (other backends, ranks and axes) is the
    parent's code. Inputs of any float dtype
    are computed in float32, as the parent does (``mixed_bfloat16``).
    ``tests/test_fused_batch_norm.py`` checks outputs, gradients and moving statistics
    against ``keras.layers.BatchNormalization`` and a NumPy reference, with a constant channel.
    """

    def _fused(self, inputs, training, mask) -> bool:
        return bool(training and self.trainable and not self.synchronized and self._fusable(inputs, mask))

    def _fusable(self, inputs, mask) -> bool:
        return bool(mask is None and not self.renorm and len(inputs.shape) == 4 and self.axis in (-1, 3)
                    and keras.backend.backend() == "tensorflow" and self._fused_epsilon_ok())

    def _fused_epsilon_ok(self) -> bool:
        if self.epsilon >= 1.001e-5:
            return True
        import tensorflow as tf

        return not tf.config.list_logical_devices("GPU")  # cuDNN's kernel refuses a smaller epsilon

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            if self._fusable(inputs, mask):
                return self._fused_inference(inputs)
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # the TensorFlow backend is running: already imported

        x = ops.cast(inputs, "float32")
        gamma, beta = self._scale_offset(x.shape[-1])
        empty = ops.zeros((0,), "float32")  # no running statistics go in: training mode
        # the raw op: tf.nn's wrapper raises epsilon to 1.001e-5 (a cuDNN limit), this CPU kernel takes any
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)[:3]
        shape = ops.shape(x)
        n = ops.cast(shape[0] * shape[1] * shape[2], "float32")
        variance = variance * ((n - 1.0) / ops.maximum(n, 1.0))  # the kernel's is unbiased, Keras averages the biased
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(y, self.compute_dtype)

    def _scale_offset(self, channels):
        """``gamma`` and ``beta`` in float32 (ones and zeros without ``scale`` / ``center``): the kernel needs both."""
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,), "float32")
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,), "float32")
        return gamma, beta

    def _fused_inference(self, inputs):
        """Inference (or a frozen layer): the moving statistics, one pass (Keras: a multiply and an add)."""
        import tensorflow as tf

        x = ops.cast(inputs, "float32")
        gamma, beta = self._scale_offset(x.shape[-1])
        y = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=ops.cast(self.moving_mean, "float32"),
            variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=False)[0]
        return ops.cast(y, self.compute_dtype)


_PRELU_KERNELS = {}


def _prelu_kernels():
    """PReLU's forward and backward as two XLA-compiled TensorFlow functions (built once, on first use)."""
    if not _PRELU_KERNELS:
        import tensorflow as tf  # only on the TensorFlow backend

        @tf.function(jit_compile=True, autograph=False)
        def forward(x, alpha):
            return tf.where(x > 0, x, x * alpha)

        @tf.function(jit_compile=True, autograph=False)
        def backward(x, alpha, upstream, alpha_axes):
            positive = x > 0
            dx = tf.where(positive, upstream, upstream * alpha)
            dalpha = tf.reduce_sum(tf.where(positive, tf.zeros_like(x), upstream * x), axis=alpha_axes, keepdims=True)
            return dx, dalpha

        _PRELU_KERNELS.update(forward=forward, backward=backward)
    return _PRELU_KERNELS


@_register
class FusedPReLU(keras.layers.PReLU):
    """``keras.layers.PReLU`` whose forward and backward each run as one fused kernel on TensorFlow.

    Keras writes PReLU as ``relu(x) - alpha * relu(-x)``: four elementwise ops forward and
    more backward, each a full pass over the activation (VarGFaceNet has 82 PReLUs, about
    as many activations as its batch norms). On TensorFlow this layer computes
    ``where(x > 0, x, alpha * x)`` and its gradient as two small XLA-compiled functions, a
    single pass each, inside the ordinary (not XLA) training graph: 1.9x faster forward and
    backward on a 64x56x56x80 activation (docs/performance.md, "PReLU"). Other backends
    run the parent's code.

    Same weight (``alpha``), config and outputs as the parent. One difference: at exactly
    ``x == 0`` the input gradient is ``alpha * upstream`` (PyTorch's convention); Keras's
    form gives 0 there. ``tests/test_fused_prelu.py`` checks outputs and both gradients
    against ``keras.layers.PReLU`` and a NumPy reference.
    """

    def call(self, inputs):
        if keras.backend.backend() != "tensorflow":
            return super().call(inputs)
        import tensorflow as tf

        kernels = _prelu_kernels()
        rank = len(inputs.shape)
        # alpha has shape inputs.shape[1:] with 1 on the shared axes: its gradient sums the batch and those
        alpha_axes = [0] + [i for i in range(1, rank) if self.alpha.shape[i - 1] == 1]
        alpha = ops.expand_dims(ops.cast(self.alpha, inputs.dtype), 0)

        @tf.custom_gradient
        def prelu(x, a):
            def grad(upstream):
                return kernels["backward"](x, a, upstream, alpha_axes)

            return kernels["forward"](x, a), grad

        return prelu(inputs, alpha)


_FUSED_AS_KERAS = {FusedBatchNormalization: keras.layers.BatchNormalization, FusedPReLU: keras.layers.PReLU}


@contextlib.contextmanager
def fused_layers_addressed_as_keras(model):
    """Inside the block, every :class:`FusedBatchNormalization` / :class:`FusedPReLU` of ``model`` is its Keras parent.

    A Keras weights file addresses a layer by its class's snake-case name and rank
    (``layers/batch_normalization_3/vars``), not by the layer's name: the weights
    of a model built before the builders used the fused layers (run backups,
    ``.weights.h5`` files) sit under ``batch_normalization_*`` / ``p_re_lu_*``, and a
    fused layer looks for ``fused_batch_normalization_*``. Each fused layer holds the
    same variables as its parent, so loading such a file inside this block fills
    them; :func:`load_weights` does that when the plain load fails. The
    classes are put back on exit. Yields how many layers were switched.
    """
    switched = [(layer, type(layer)) for layer in model._flatten_layers(include_self=True, recursive=True)
                if type(layer) in _FUSED_AS_KERAS]
    for layer, fused in switched:
        layer.__class__ = _FUSED_AS_KERAS[fused]
    try:
        yield len(switched)
    finally:
        for layer, fused in switched:
            layer.__class__ = fused


def load_weights(model, path) -> None:
    """``model.load_weights(path)``, which also reads files written before the builders used
    :class:`FusedBatchNormalization` and :class:`FusedPReLU`.

    Keras finds a layer's weights in a file by its class's name, so a run backup or ``.weights.h5`` saved
    when the layers were ``keras.layers.BatchNormalization`` / ``PReLU`` does not load into today's model
    (same variables, another address). When the plain load fails and the model has fused layers, the file
    is read again with them addressed as Keras's (:func:`fused_layers_addressed_as_keras`);
    if that fails too, the first error is raised.
    """
    try:
        model.load_weights(str(path))
    except ValueError as first:
        with fused_layers_addressed_as_keras(model) as switched:
            if not switched:
                raise
            try:
                model.load_weights(str(path))
            except ValueError:
                raise first from None


@_register
class AbsoluteDifference(keras.layers.Layer):
    """``|a - b|`` of two tensors of the same shape (the Siamese verifier's merge)."""

    def call(self, inputs):
        a, b = inputs
        return ops.abs(a - b)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@_register
class L2Normalize(keras.layers.Layer):
    """``x / sqrt(max(sum(x^2), epsilon))`` along ``axis``: finite for a zero vector."""

    def __init__(self, axis=-1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = float(epsilon)

    def call(self, inputs):
        # float32 inside whatever the compute dtype: in float16 the squares overflow above ~256 per
        # element and epsilon underflows to 0 (a zero vector gave NaN); the result has the layer's dtype.
        x = ops.cast(inputs, "float32")
        sq = ops.sum(ops.square(x), axis=self.axis, keepdims=True)
        return ops.cast(x * ops.rsqrt(ops.maximum(sq, self.epsilon)), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config


@_register
class L2Pooling2D(keras.layers.Layer):
    """L2 pooling (FaceNet NN2): ``sqrt(max(sum over the window of x^2, epsilon))``.

    ``mode="sum"`` is the L2 norm of each window (the paper's L2 pooling);
    ``mode="mean"`` divides the sum of squares by the number of window elements
    inside the image (padding excluded, like TensorFlow's average pooling), i.e.
    the root mean square. The window sum is a depthwise convolution with a
    constant ones kernel, so the result is exact on every backend and with
    ``"same"`` padding. Squares, sums and the square root are computed in
    float32 whatever the compute dtype (mixed precision), and the epsilon keeps
    the value and the gradient finite for an all-zero window (ReLU outputs).
    Inputs are channels-last.
    """

    def __init__(self, pool_size=3, strides=1, padding="same", mode="sum", epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size)
        self.strides = _pair(strides)
        self.padding = padding.lower()
        if self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if mode not in ("sum", "mean"):
            raise ValueError(f"mode must be 'sum' or 'mean', got {mode!r}")
        self.mode = mode
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        kh, kw = self.pool_size
        channels = x.shape[-1]
        sq = ops.square(x)
        total = ops.depthwise_conv(sq, ops.ones((kh, kw, channels, 1), "float32"),
                                   strides=self.strides, padding=self.padding)
        if self.mode == "mean":
            count = ops.depthwise_conv(ops.ones_like(sq[..., :1]), ops.ones((kh, kw, 1, 1), "float32"),
                                       strides=self.strides, padding=self.padding)
            total = total / count
        out = ops.sqrt(ops.maximum(total, self.epsilon))
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],
                _out_len(input_shape[1], self.pool_size[0], self.strides[0], self.padding),
                _out_len(input_shape[2], self.pool_size[1], self.strides[1], self.padding),
                input_shape[3])

    def macs(self, output_shape) -> int:
        """One square-accumulate per window element and output value (one sample)."""
        kh, kw = self.pool_size
        return int(output_shape[1] * output_shape[2] * output_shape[3] * kh * kw)

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides, padding=self.padding,
                      mode=self.mode, epsilon=self.epsilon)
        return config


@_register
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalisation (AlexNet / GoogLeNet "norm").

    ``x / (bias + alpha * sum_{|j - c| <= depth_radius} x_j^2) ** beta`` with
    the semantics of ``tf.nn.local_response_normalization`` (``alpha`` is not
    divided by the window size). Defaults follow GoogLeNet's Caffe model
    (window 5, ``alpha`` 1e-4 / 5, ``beta`` 0.75, ``bias`` 1). Channels-last.
    """

    def __init__(self, depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        r = self.depth_radius
        channels = inputs.shape[-1]
        x = ops.cast(inputs, "float32")  # float16 squares overflow above 256 (mixed precision)
        sq = ops.square(x)
        pad = [[0, 0]] * (len(inputs.shape) - 1) + [[r, r]]
        padded = ops.pad(sq, pad)
        total = padded[..., 0:channels]
        for i in range(1, 2 * r + 1):
            total = total + padded[..., i:i + channels]
        return ops.cast(x / ops.power(self.bias + self.alpha * total, self.beta), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def macs(self, output_shape) -> int:
        """One square-accumulate per channel of the window and output value (one sample)."""
        return int(math.prod(output_shape[1:]) * (2 * self.depth_radius + 1))

    def get_config(self):
        config = super().get_config()
        config.update(depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha,
                      beta=self.beta)
        return config


@_register
class EuclideanDistance(keras.layers.Layer):
    """Row-wise distance of two embeddings ``[a, b]`` -> shape ``(batch, 1)``.

    ``squared=False``: ``sqrt(max(sum((a - b)^2), epsilon))``: the value is at
    least ``sqrt(epsilon)`` and the gradient is finite (zero) when ``a == b``,
    where the plain ``sqrt`` has an infinite derivative that turns into NaN.
    ``squared=True``: ``sum((a - b)^2)`` (no square root, no epsilon needed).
    The layer computes in float32 unless given another ``dtype``, so a
    mixed-precision model still feeds its loss float32 distances. Replaces the
    monograph's Lambda distance layers (named ``pos_dist`` / ``neg_dist`` in
    :func:`kerasface.models.TripletModel`).
    """

    def __init__(self, squared=False, epsilon=1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.squared = bool(squared)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        a, b = inputs
        d2 = ops.sum(ops.square(a - b), axis=-1, keepdims=True)
        if self.squared:
            return d2
        return ops.sqrt(ops.maximum(d2, self.epsilon))

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape[0][:-1]), 1)

    def get_config(self):
        config = super().get_config()
        config.update(squared=self.squared, epsilon=self.epsilon)
        return config


@_register
class StackDistances(keras.layers.Layer):
    """``[pos_dist, neg_dist]``, each ``(batch, 1)`` -> ``(batch, 2, 1)`` (index 0 positive).

    The monograph's stacked output that every triplet loss reads. float32
    unless given another ``dtype``.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        pos, neg = inputs
        return ops.stack([pos, neg], axis=1)

    def compute_output_shape(self, input_shape):
        pos = tuple(input_shape[0])
        return (pos[0], 2, *pos[1:])


@_register
class FacePreprocessing(keras.layers.Layer):
    """RGB faces with 0..255 values (uint8 or float) -> ``(x - offset) / scale``, per channel or not.

    The first layer of a model that scales its own input, so that its users (and its
    ``model.export()`` SavedModel) feed plain image pixels. ``spec`` is the model's
    :class:`kerasface.face_spec.FaceSpec` as a dict (crop size, alignment, metric, the
    decision threshold and its source): it does no computation, it travels in the saved
    config so that ``kerasface verify`` / ``embed`` prepare faces the way the model expects.
    """

    def __init__(self, offset=127.5, scale=128.0, spec=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.offset = [float(v) for v in offset] if isinstance(offset, (list, tuple)) else float(offset)
        self.scale = [float(v) for v in scale] if isinstance(scale, (list, tuple)) else float(scale)
        if min(self.scale if isinstance(self.scale, list) else [self.scale]) <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.spec = dict(spec) if spec is not None else None

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        return (x - offset) / scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(offset=self.offset, scale=self.scale, spec=self.spec)
        return config


def find_face_preprocessing(model: keras.Model) -> FacePreprocessing | None:
    """The first :class:`FacePreprocessing` layer of ``model`` or of a model nested in it (None: there is none)."""
    for layer in model.layers:
        if isinstance(layer, FacePreprocessing):
            return layer
        if isinstance(layer, keras.Model):
            found = find_face_preprocessing(layer)
            if found is not None:
                return found
    return None


def carried_face_spec(model: keras.Model) -> FaceSpec | None:
    """The :class:`~kerasface.face_spec.FaceSpec` that ``model``'s :class:`FacePreprocessing` layer carries
    (None: no such layer, or one without a spec); a malformed one is a ``ValueError`` naming the model."""
    layer = find_face_preprocessing(model)
    if layer is None or not layer.spec:
        return None
    try:
        return FaceSpec.from_dict(layer.spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"model {model.name!r}: its FacePreprocessing layer carries a bad spec ({e})") from None


def _pair(v):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v}")
    return v


def _out_len(n, k, s, padding):
    if n is None:
        return None
    if padding == "same":
        return -(-n // s)
    return (n - k) // s + 1
