"""FaceNet NN2 (Schroff et al. 2015, Table 2): the Inception network of report 004.

Layout (224x224 input; widths exactly as the report's table):

===========  ========  ====  ====  ======  ====  ======  ====  ==============
block        output    #1x1  #3x3r #3x3    #5x5r #5x5    pool  projection
===========  ========  ====  ====  ======  ====  ======  ====  ==============
conv1        112x112   7x7/2 conv 64
pool1        56x56     max 3x3/2 (+ norm)
conv2        56x56     1x1 reduce 64, 3x3 conv 192 (inception (2))
pool2        28x28     (norm +) max 3x3/2
3a           28x28x256  64    96    128     16    32      max   32
3b           28x28x320  64    96    128     32    64      L2    64
3c           14x14x640  0     128   256/2   32    64/2    max 3x3/2 (pass-through)
4a           14x14x640  256   96    192     32    64      L2    128
4b           14x14x640  224   112   224     32    64      L2    128
4c           14x14x640  192   128   256     32    64      L2    128
4d           14x14x640  160   144   288     32    64      L2    128
4e           7x7x1024   0     160   256/2   64    128/2   max 3x3/2 (pass-through)
5a           7x7x1024   384   192   384     48    128     L2    128
5b           7x7x1024   384   192   384     48    128     max   128
avg pool     1024      global average (any input size divisible by 32)
fc           128       dense
embedding    128       L2 normalisation
===========  ========  ====  ====  ======  ====  ======  ====  ==============

Branch convolutions are followed by ReLU; in stride-2 blocks (3c, 4e) the
reductions run at the input resolution and the 3x3 / 5x5 convolutions and the
max pool have stride 2. The pooling in the projection branch has a 3x3 window
and stride 1; L2 pooling is :class:`kerasface.layers.L2Pooling2D` (the L2 norm
of each window).

Normalisation (``norm``):

* ``"batch"`` (default): a BatchNormalization after every convolution (convs
  have no bias), then ReLU; the table's two "norm" rows need no layer of
  their own. This is the fix the report adopted for its collapsing runs.
  Trainable parameters 7,464,224 (the table: 7.5M), plus 15,840 BN moving
  statistics.
* ``"lrn"``: the paper's form: convolutions with biases and ReLU, no BN, and a
  :class:`kerasface.layers.LocalResponseNormalization` at the two "norm" rows
  (after pool1 and before pool2). Trainable parameters 7,456,304.
* ``"none"``: convolutions with biases and ReLU, neither BN nor LRN (the
  report's model before its "batch normalize" fix, read as the plain table
  without the "norm" rows).

Layer names are readable and never contain "1x1" (the monograph's Keras build
hit that): ``inception_3a_b1_conv``, ``inception_3a_b3_reduce``,
``inception_3a_b3_conv``, ``inception_3a_b5_reduce``, ``inception_3a_b5_conv``,
``inception_3a_pool``, ``inception_3a_pool_proj``, ``inception_3a_concat``,
each conv followed by ``<name>_bn`` and ``<name>_relu``.

Inputs are images normalised as ``(x - 127.5) / 128`` by the data pipeline,
the same convention as every kerasface backbone (the model has no rescaling
layer). The embedding is float32 under mixed precision.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import FusedBatchNormalization, L2Normalize, L2Pooling2D, LocalResponseNormalization

__all__ = ["FaceNetNN2", "facenet_nn2", "NN2_INCEPTION_BLOCKS"]

# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool ("max" | "l2"), pool proj, stride)
NN2_INCEPTION_BLOCKS = {
    "3a": (64, 96, 128, 16, 32, "max", 32, 1),
    "3b": (64, 96, 128, 32, 64, "l2", 64, 1),
    "3c": (0, 128, 256, 32, 64, "max", 0, 2),
    "4a": (256, 96, 192, 32, 64, "l2", 128, 1),
    "4b": (224, 112, 224, 32, 64, "l2", 128, 1),
    "4c": (192, 128, 256, 32, 64, "l2", 128, 1),
    "4d": (160, 144, 288, 32, 64, "l2", 128, 1),
    "4e": (0, 160, 256, 64, 128, "max", 0, 2),
    "5a": (384, 192, 384, 48, 128, "l2", 128, 1),
    "5b": (384, 192, 384, 48, 128, "max", 128, 1),
}

_NORMS = ("batch", "lrn", "none")


class _Builder:
    def __init__(self, norm, bn_momentum, bn_epsilon, l2_pooling):
        self.norm = norm
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.l2_pooling = l2_pooling

    def conv(self, x, filters, kernel, name, strides=1):
        """Conv (+ BN) + ReLU; the conv layer is called ``name``."""
        batch = self.norm == "batch"
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=not batch,
                          kernel_initializer="he_normal", name=name)(x)
        if batch:
            x = FusedBatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                        name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def pool(self, x, kind, strides, name):
        if kind == "l2" and self.l2_pooling:
            return L2Pooling2D(3, strides=strides, padding="same", name=name)(x)
        return layers.MaxPooling2D(3, strides=strides, padding="same", name=name)(x)

    def inception(self, x, spec, name):
        n1, r3, n3, r5, n5, pool, proj, stride = spec
        branches = []
        if n1:
            branches.append(self.conv(x, n1, 1, f"{name}_b1_conv"))
        b3 = self.conv(x, r3, 1, f"{name}_b3_reduce")
        branches.append(self.conv(b3, n3, 3, f"{name}_b3_conv", strides=stride))
        b5 = self.conv(x, r5, 1, f"{name}_b5_reduce")
        branches.append(self.conv(b5, n5, 5, f"{name}_b5_conv", strides=stride))
        p = self.pool(x, pool, stride, f"{name}_pool")
        if proj:
            p = self.conv(p, proj, 1, f"{name}_pool_proj")
        branches.append(p)
        return layers.Concatenate(name=f"{name}_concat")(branches)


def FaceNetNN2(
    input_shape=(224, 224, 3),
    embedding_dim=128,
    norm="batch",
    l2_pooling=True,
    l2_normalize=True,
    bn_momentum=0.99,
    bn_epsilon=1e-3,
    name="facenet_nn2",
):
    """Build FaceNet NN2: images -> ``embedding_dim`` vector (unit length by default).

    Args:
        input_shape: HxWx3 with H and W divisible by 32 (224 in the paper; the
            final average pool is global, so 96 or 32 work for tests).
        embedding_dim: size of the FC layer / embedding (128 in the paper).
        norm: ``"batch"`` (BN after every conv, default), ``"none"`` (neither) or ``"lrn"`` (the
            paper's conv biases + local response normalisation at the two
            "norm" rows); see the module docstring.
        l2_pooling: ``False`` replaces every L2 pooling by max pooling (one of
            the report's attempted fixes).
        l2_normalize: ``False`` drops the final L2 normalisation (another of
            the report's attempted fixes); the output is then the FC output.
        bn_momentum, bn_epsilon: BatchNormalization settings (``norm="batch"``).
    """
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    h, w = input_shape[0], input_shape[1]
    if h % 32 or w % 32:
        raise ValueError(f"input height and width must be divisible by 32, got {input_shape}")
    b = _Builder(norm, bn_momentum, bn_epsilon, l2_pooling)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = b.conv(inputs, 64, 7, "conv1", strides=2)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    if norm == "lrn":
        x = LocalResponseNormalization(name="norm1")(x)
    # inception (2): reduce to 64, then 3x3 to 192
    x = b.conv(x, 64, 1, "conv2_reduce")
    x = b.conv(x, 192, 3, "conv2")
    if norm == "lrn":
        x = LocalResponseNormalization(name="norm2")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    for block, spec in NN2_INCEPTION_BLOCKS.items():
        x = b.inception(x, spec, f"inception_{block}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if l2_normalize:
        x = layers.Dense(embedding_dim, kernel_initializer="glorot_uniform", name="fc")(x)
        x = L2Normalize(dtype="float32", name="embedding")(x)
    else:
        x = layers.Dense(embedding_dim, kernel_initializer="glorot_uniform", dtype="float32",
                         name="embedding")(x)
    return keras.Model(inputs, x, name=name)


def facenet_nn2(**kwargs):
    """The report's FaceNet NN2 (224x224x3 -> 128-d unit vector)."""
    kwargs.setdefault("name", "facenet_nn2")
    return FaceNetNN2(**kwargs)
