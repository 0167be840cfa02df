"""ResNet with basic blocks (He et al. 2016), torchvision layout: report 003's backbone.

Layout of ``resnet34`` (224x224 input):

========  ========  ==========================================================
stage     output    layers
========  ========  ==========================================================
stem      112x112   7x7 conv 64 stride 2, BN, ReLU
pool      56x56     3x3 max pool stride 2
stage1    56x56     basic block [3x3 64, 3x3 64] x3
stage2    28x28     basic block [3x3 128, 3x3 128] x4 (first block stride 2)
stage3    14x14     basic block [3x3 256, 3x3 256] x6 (first block stride 2)
stage4    7x7       basic block [3x3 512, 3x3 512] x3 (first block stride 2)
avg_pool  512       global average pool
embedding 512       Dense 512 (with bias): report 003's "one linear layer to the
                    embedding size", in place of torchvision's 1000-way fc
========  ========  ==========================================================

A basic block is conv 3x3 (stride s), BN, ReLU, conv 3x3, BN, plus the
shortcut, ReLU. The shortcut is the identity, or a projection (a strided
convolution with a 1x1 kernel, no bias, and BN: torchvision's ``downsample``)
where the stride or the width changes. Convolutions have no bias (each is
followed by BN). Padding is explicit and symmetric like PyTorch's
(``ZeroPadding2D`` then a ``"valid"`` convolution or pool) wherever the stride
is 2, so a feature map has exactly torchvision's values for the same weights;
zero padding before the max pool equals PyTorch's ``-inf`` padding there
because the pool follows a ReLU.

Parameters of ``resnet34``: the convolution and BN weights are torchvision's
``resnet34`` without its ``fc``: 21,284,672 trainable (weights, BN gamma and
beta), plus 17,024 BN moving statistics. The 512-d embedding adds
512 * 512 + 512 = 262,656 (its bias is kept: torchvision's ``nn.Linear``
default, which report 003's replacement layer is), 21,547,328 trainable in all.
The classification layer of report 003 is not part of the backbone: it is a
:class:`kerasface.models.heads.MarginHead` on top
(:func:`kerasface.models.heads.classification_model`).

Layer names: ``stem_conv``, ``stem_bn``, ``stem_relu``, ``stem_pool``, then
``stage2_block1_conv1`` / ``_bn1`` / ``_relu1`` / ``_conv2`` / ``_bn2``,
``stage2_block1_proj`` / ``_proj_bn`` (projection shortcut), ``stage2_block1_add``,
``stage2_block1_out``; with squeeze-excitation (the ThinResNets,
:mod:`kerasface.models.thinresnet`) ``stage2_block1_se_pool``, ``_se_reduce``,
``_se_expand`` and ``stage2_block1_se`` (the channel scaling). No name contains
"1x1".

Inputs are images normalised as ``(x - 127.5) / 128`` by the data pipeline, like
every kerasface backbone (no rescaling layer). The embedding is float32 under
mixed precision.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import FusedBatchNormalization, L2Normalize

__all__ = ["ResNetBasic", "ResNetBottleneck", "resnet18", "resnet34", "RESNET_BLOCKS", "TORCHVISION_PARAMS_NO_FC"]

RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
# torchvision's resnetNN(), parameters without the 1000-way fc (fc: 512 * 1000 + 1000)
TORCHVISION_PARAMS_NO_FC = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000}


class _Builder:
    def __init__(self, se_reduction, bn_momentum, bn_epsilon):
        self.se_reduction = se_reduction
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def conv(self, x, filters, kernel, strides, name):
        """Bias-free conv with PyTorch's symmetric padding ``kernel // 2``."""
        pad = kernel // 2
        if strides > 1 and pad:
            x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
            padding = "valid"
        else:
            padding = "same"
        return layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                             kernel_initializer="he_normal", name=name)(x)

    def bn(self, x, name):
        return FusedBatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                       name=name)(x)

    def squeeze_excite(self, x, name):
        """SE (Hu et al. 2018): average pool, FC c/r + ReLU, FC c + sigmoid, scale (FCs with bias)."""
        c = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
        s = layers.Dense(max(c // self.se_reduction, 1), activation="relu", name=f"{name}_reduce")(s)
        s = layers.Dense(c, activation="sigmoid", name=f"{name}_expand")(s)
        return layers.Multiply(name=name)([x, s])

    def basic_block(self, x, filters, strides, name):
        y = self.conv(x, filters, 3, strides, f"{name}_conv1")
        y = self.bn(y, f"{name}_bn1")
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = self.conv(y, filters, 3, 1, f"{name}_conv2")
        y = self.bn(y, f"{name}_bn2")
        return self.residual(x, y, strides, name)

    def residual(self, x, y, strides, name):
        """The end of every block: optional SE on the branch ``y``, the shortcut (``x``, or a 1x1 projection +
        BN when the stride or width changes), add, ReLU."""
        if self.se_reduction:
            y = self.squeeze_excite(y, f"{name}_se")
        shortcut = x
        if strides != 1 or x.shape[-1] != y.shape[-1]:
            shortcut = layers.Conv2D(y.shape[-1], 1, strides=strides, use_bias=False,
                                     kernel_initializer="he_normal", name=f"{name}_proj")(x)
            shortcut = self.bn(shortcut, f"{name}_proj_bn")
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return layers.ReLU(name=f"{name}_out")(y)

    def bottleneck_block(self, x, filters, strides, name, expansion=4):
        """torchvision's v1.5 bottleneck: 1x1 c, 3x3 c (stride s), 1x1 expansion * c, each + BN (the last two
        convs' kernels named ``conv2`` / ``conv3``), optional SE, plus the shortcut, ReLU."""
        out = filters * expansion
        y = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv1")(x)
        y = layers.ReLU(name=f"{name}_relu1")(self.bn(y, f"{name}_bn1"))
        y = self.conv(y, filters, 3, strides, f"{name}_conv2")
        y = layers.ReLU(name=f"{name}_relu2")(self.bn(y, f"{name}_bn2"))
        y = layers.Conv2D(out, 1, use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv3")(y)
        y = self.bn(y, f"{name}_bn3")
        return self.residual(x, y, strides, name)


def ResNetBasic(
    blocks=(3, 4, 6, 3),
    widths=RESNET_WIDTHS,
    input_shape=(224, 224, 3),
    stem_channels=64,
    se_reduction=None,
    embedding_dim=512,
    l2_normalize=False,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    name="resnet34",
    block="basic",
):
    """Build a basic-block ResNet embedding model (images -> ``embedding_dim`` vector).

    Args:
        blocks: blocks per stage (``(3, 4, 6, 3)``: ResNet34; ``(2, 2, 2, 2)``: ResNet18).
        widths: channels per stage.
        input_shape: HxWx3, H and W divisible by 32 (224 in the reports; 64 works
            for tests).
        stem_channels: channels of the 7x7 stride-2 stem convolution.
        se_reduction: ``None`` for plain blocks, or the squeeze-excitation
            reduction ratio (8 in the ThinResNets).
        embedding_dim: size of the final Dense embedding.
        l2_normalize: add a final :class:`kerasface.layers.L2Normalize` (off by
            default: the margin heads normalise themselves).
        bn_momentum, bn_epsilon: BatchNormalization settings (defaults are
            PyTorch's: momentum 0.1 there is 0.9 here, epsilon 1e-5).
        block: ``"basic"``, or ``"bottleneck"`` (:func:`ResNetBottleneck`).
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if input_shape[0] % 32 or input_shape[1] % 32:
        raise ValueError(f"input height and width must be divisible by 32, got {input_shape}")
    if len(blocks) != len(widths):
        raise ValueError(f"blocks {blocks} and widths {widths} differ in length")
    b = _Builder(se_reduction, bn_momentum, bn_epsilon)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = b.conv(inputs, stem_channels, 7, 2, "stem_conv")
    x = b.bn(x, "stem_bn")
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.ZeroPadding2D(1, name="stem_pool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)
    for s, (n, filters) in enumerate(zip(blocks, widths), start=1):
        for i in range(1, n + 1):
            strides = 2 if (s > 1 and i == 1) else 1
            if block == "bottleneck":
                x = b.bottleneck_block(x, filters, strides, f"stage{s}_block{i}")
            else:
                x = b.basic_block(x, filters, strides, f"stage{s}_block{i}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if l2_normalize:
        x = layers.Dense(embedding_dim, name="fc")(x)
        x = L2Normalize(dtype="float32", name="embedding")(x)
    else:
        x = layers.Dense(embedding_dim, dtype="float32", name="embedding")(x)
    return keras.Model(inputs, x, name=name)


def ResNetBottleneck(blocks=(3, 4, 6, 3), widths=RESNET_WIDTHS, **kwargs):
    """A bottleneck ResNet (``[1x1 c, 3x3 c, 1x1 4c]`` blocks, torchvision v1.5: stride on the 3x3):
    :func:`ResNetBasic` with ``block="bottleneck"``; ``widths`` are the inner widths ``c``."""
    kwargs.setdefault("name", "resnet_bottleneck")
    return ResNetBasic(blocks=blocks, widths=widths, block="bottleneck", **kwargs)


def resnet34(**kwargs):
    """Report 003's ResNet34: torchvision layout, fc replaced by a 512-d Dense embedding."""
    kwargs.setdefault("name", "resnet34")
    return ResNetBasic(blocks=RESNET_BLOCKS["resnet34"], widths=RESNET_WIDTHS, **kwargs)


def resnet18(**kwargs):
    """ResNet18 (also tried in report 003): blocks 2-2-2-2, otherwise as :func:`resnet34`."""
    kwargs.setdefault("name", "resnet18")
    return ResNetBasic(blocks=RESNET_BLOCKS["resnet18"], widths=RESNET_WIDTHS, **kwargs)
