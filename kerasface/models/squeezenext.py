"""SqueezeNeXt SqNxt-23v5 (Gholami et al. 2018): report 002's students, width 1.0 and 2.0.

Two layouts, chosen with ``layout``:

``"report"`` (default; what report 002's ``model/student.py`` builds, and the
layout whose parameter counts are the report's, to the parameter):

==============  ===========================================================
block           layers (C = (32, 64, 128, 256) x width per stage)
==============  ===========================================================
stem            5x5/2 conv 64 valid (not width-scaled), BN, ReLU; 3x3/2 max
                pool same
stage s         ``stage{s}_transition``: conv with a 1x1 kernel to C, stride
                1 (stage 1) or 2, BN, ReLU; then blocks [2, 4, 14, 1]
block           1x1 C/2, 1x1 C/4, 3x1 C/2, 1x3 C/2, 1x1 C (each conv, BN,
                ReLU) + identity (no activation after the addition)
final           1x1 conv 128, BN, ReLU; global average pool; dropout 0.2
embedding       the 128-d pooled features (``embedding_dim=None``), or a
                bias-free Dense + BN to ``embedding_dim``
==============  ===========================================================

``"paper"`` (the paper's / osmr-imgclsmob's SqNxt-23v5): 7x7/2 stem conv
64 x width, 3x3/2 max pool; stage widths (32, 64, 128, 256) x width with
blocks [2, 4, 14, 1], the first block of stages 2-4 strided; a block squeezes
its *input* channels ``c_in`` to ``c_in/r`` and ``c_in/(2r)`` (1x1, 1x1), then
1x3 and 3x1 to ``c_in/r``, and expands to C (1x1), r = 1 in a strided block,
4 where ``c_in > C``, 2 otherwise; the bypass is a strided 1x1 projection +
BN (+ ReLU) where the stride or width changes, ReLU after the addition; final
1x1 conv 128 x width.

All convolutions are bias-free and followed by BN (gamma and beta; momentum
0.997, epsilon 1e-5 like the report's TF-slim code).

Parameter counts (the report's figures include the classifier):

======================  =========  =========  ==============  ===========
model (report layout)   backbone   BN stats   + Dense(2360)   report
======================  =========  =========  ==============  ===========
sqnxt23v5_w1 (128-d)      802,016     14,368     1,106,456     1,106,456
sqnxt23v5_w2 (128-d)    3,094,912     28,352     3,399,352     3,399,352
======================  =========  =========  ==============  ===========

(backbone = trainable: kernels + BN gamma/beta; "+ Dense(2360)" adds
``128 * 2360 + 2360 = 304,440``, the classifier *with* bias on the 128-d
embedding, no extra embedding layer; Keras totals add the BN statistics.)
The search (``docs/experiments/teacher-student.md``) tried both layouts, 5x5
and 7x7 stems, width-scaled or fixed stem and final convs, conv biases, BN
with 0-4 values per channel, an extra embedding Dense (8-2048 units, bias,
BN) and classifiers on 128-d or the embedding, with and without bias, for any
class count: the only combination that gives *both* widths with one rule is
the report layout above with 2360 classes (the teacher's class count,
:mod:`kerasface.models.inception_resnet`) and the 128-d pooled embedding.
The paper layout matches width 1.0 only (785,632 with a 7x7 stem, + Dense
128 -> 128 without bias + Dense(2360) with bias = 1,106,456, a coincidence);
for width 2.0 it gives 3,432,184 with that head, 32,832 more than the report.
The paper layout itself is checked against osmr's counts: its trainable
parameters plus one bias per conv output channel plus a 1000-way classifier
with bias are osmr's 921,816 (width 1.0) and 3,366,344 (width 2.0).

Names: ``stem_conv`` / ``_bn`` / ``_relu``, ``stem_pool``,
``stage3_transition``, ``stage3_block7_conv1`` ... ``_conv5`` (+ ``_bn``,
``_relu``), ``stage3_block7_add`` (paper: ``stage2_block1_proj``,
``stage2_block1_out``), ``final_conv``, ``avg_pool``, ``dropout``,
``embedding``. No name contains "1x1". Inputs are images normalised as
``(x - 127.5) / 128``; report 002's images are 218x178 (``REPORT_INPUT_SHAPE``, its test-time size; its
authors' code trains on a crop resized to 224x224, the size the report-002 presets use).
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import FusedBatchNormalization
from kerasface.models.inception_resnet import REPORT_INPUT_SHAPE

__all__ = ["SQNXT23V5_BLOCKS", "SQNXT_REPORT_PARAMS", "sqnxt23v5", "sqnxt23v5_w1", "sqnxt23v5_w1_gdc", "sqnxt23v5_w2",
           "sqnxt23v5_w2_gdc"]

SQNXT23V5_BLOCKS = (2, 4, 14, 1)
STAGE_WIDTHS = (32, 64, 128, 256)
# report 002's parameter counts, classifier Dense(128 -> 2360) with bias included
SQNXT_REPORT_PARAMS = {1.0: 1_106_456, 2.0: 3_399_352}
LAYOUTS = ("report", "paper")
POOLINGS = ("avg", "gdc")


class _Builder:
    def __init__(self, bn_momentum, bn_epsilon):
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def conv(self, x, filters, kernel, name, strides=1, padding="same", activation=True):
        x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                          kernel_initializer="he_normal", name=name)(x)
        x = FusedBatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                    name=f"{name}_bn")(x)
        if activation:
            x = layers.ReLU(name=f"{name}_relu")(x)
        return x

    def report_block(self, x, c, name):
        y = self.conv(x, c // 2, 1, f"{name}_conv1")
        y = self.conv(y, c // 4, 1, f"{name}_conv2")
        y = self.conv(y, c // 2, (3, 1), f"{name}_conv3")
        y = self.conv(y, c // 2, (1, 3), f"{name}_conv4")
        y = self.conv(y, c, 1, f"{name}_conv5")
        return layers.Add(name=f"{name}_add")([x, y])

    def paper_block(self, x, c, strides, name):
        cin = x.shape[-1]
        if strides == 2:
            r = 1
        elif cin > c:
            r = 4
        else:
            r = 2
        y = self.conv(x, cin // r, 1, f"{name}_conv1", strides=strides)
        y = self.conv(y, cin // (2 * r), 1, f"{name}_conv2")
        y = self.conv(y, cin // r, (1, 3), f"{name}_conv3")
        y = self.conv(y, cin // r, (3, 1), f"{name}_conv4")
        y = self.conv(y, c, 1, f"{name}_conv5")
        shortcut = x
        if strides != 1 or cin != c:
            shortcut = self.conv(x, c, 1, f"{name}_proj", strides=strides)
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return layers.ReLU(name=f"{name}_out")(y)


def sqnxt23v5(width=1.0, input_shape=REPORT_INPUT_SHAPE, embedding_dim=None, layout="report",
              dropout=0.2, bn_momentum=0.997, bn_epsilon=1e-5, pooling="avg", name=None):
    """Build SqNxt-23v5 (images -> embedding).

    Args:
        width: channel multiplier of the stages (1.0, 2.0; any value giving
            stage widths divisible by 4, e.g. 0.5 for tests). The report
            layout keeps the 64-channel stem and the 128-channel final conv
            at every width, the paper layout scales both.
        input_shape: HxWx3 (report 002's images: 218x178, its training input 224x224; at least 32x32).
        embedding_dim: ``None``: the pooled final-conv features are the
            embedding (128-d in the report layout, 128 x width in the paper
            one); an int adds a bias-free Dense + BN of that size.
        layout: ``"report"`` or ``"paper"`` (module docstring).
        dropout: rate after the global pool (the report's keep probability
            0.8 -> 0.2).
        bn_momentum, bn_epsilon: BatchNormalization settings.
        pooling: ``"avg"`` (the report: global average pool, every position of the final map weighted
            alike) or ``"gdc"`` (beyond the report: a global depthwise convolution, one learned weight per
            channel and position of the final map, then BN; MobileFaceNet's face embedding pool, which
            keeps where on the face a feature fired). Same embedding size; ``gdc`` adds
            ``h * w * 128`` weights + BN (2,048 + 256 at 112x112).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if min(input_shape[0], input_shape[1]) < 32:
        raise ValueError(f"input height and width must be at least 32, got {input_shape}")
    widths = [int(round(c * width)) for c in STAGE_WIDTHS]
    if width <= 0 or any(c % 4 for c in widths):
        raise ValueError(f"width {width} gives stage widths {widths}; each must be a positive multiple of 4")
    if embedding_dim is not None and int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be positive or None, got {embedding_dim}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if name is None:
        name = (f"sqnxt23v5_w{width:g}".replace(".", "_") + ("" if layout == "report" else "_paper")
                + ("" if pooling == "avg" else "_gdc"))
    b = _Builder(bn_momentum, bn_epsilon)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    if layout == "report":
        x = b.conv(inputs, 64, 5, "stem_conv", strides=2, padding="valid")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for s, (n, c) in enumerate(zip(SQNXT23V5_BLOCKS, widths), start=1):
            x = b.conv(x, c, 1, f"stage{s}_transition", strides=1 if s == 1 else 2)
            for i in range(1, n + 1):
                x = b.report_block(x, c, f"stage{s}_block{i}")
        final = 128
    else:
        x = b.conv(inputs, int(round(64 * width)), 7, "stem_conv", strides=2)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for s, (n, c) in enumerate(zip(SQNXT23V5_BLOCKS, widths), start=1):
            for i in range(1, n + 1):
                x = b.paper_block(x, c, 2 if (s > 1 and i == 1) else 1, f"stage{s}_block{i}")
        final = int(round(128 * width))
    x = b.conv(x, final, 1, "final_conv")
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    else:
        x = layers.DepthwiseConv2D(tuple(x.shape[1:3]), padding="valid", use_bias=False, name="gdc_conv")(x)
        x = FusedBatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name="gdc_bn")(x)
        x = layers.Flatten(name="gdc_flatten")(x)
    if embedding_dim is None:
        x = layers.Dropout(dropout, dtype="float32", name="embedding")(x)
    else:
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(int(embedding_dim), use_bias=False, name="bottleneck")(x)
        x = FusedBatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, dtype="float32",
                                    name="embedding")(x)
    return keras.Model(inputs, x, name=name)


def sqnxt23v5_w1_gdc(**kwargs):
    """1.0-SqNxt-23v5 with a global depthwise convolution in place of the average pool (``pooling="gdc"``)."""
    return sqnxt23v5(width=1.0, pooling="gdc", **kwargs)


def sqnxt23v5_w2_gdc(**kwargs):
    """2.0-SqNxt-23v5 with a global depthwise convolution in place of the average pool (``pooling="gdc"``)."""
    return sqnxt23v5(width=2.0, pooling="gdc", **kwargs)


def sqnxt23v5_w1(**kwargs):
    """1.0-SqNxt-23v5, report 002's small student (218x178 by default, 128-d embedding)."""
    return sqnxt23v5(width=1.0, **kwargs)


def sqnxt23v5_w2(**kwargs):
    """2.0-SqNxt-23v5, report 002's large student (218x178 by default, 128-d embedding)."""
    return sqnxt23v5(width=2.0, **kwargs)
