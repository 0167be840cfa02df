"""VarGFaceNet (Yan et al. 2019) as used by report 000, and its reduced variant.

Layout (report 000, Table 1; block internals as in the authors' MXNet release):

=============  ========  =================================================
stage          output    blocks
=============  ========  =================================================
conv1          112x112   3x3 conv 40, BN, PReLU
head           56x56     variable-group block, stride 2, factor 1, SE
stage 2        28x28     down-sampling block (40->80) + 2 normal blocks
stage 3        14x14     down-sampling block (80->160) + 6 normal blocks
stage 4        7x7       down-sampling block (160->320) + 3 normal blocks
embedding      1x1x512   pointwise 1024, 7x7 group conv (groups 128),
                         pointwise 512, FC 512, BN
=============  ========  =================================================

A *separable* unit is a variable-group 3x3 conv (8 input channels per group,
``factor`` times as many outputs as inputs), BN, PReLU, then a pointwise conv,
BN and optionally PReLU. Normal blocks: two separable units, squeeze-excitation
(reduction 4, no biases, PReLU), identity shortcut, PReLU. Down-sampling
blocks: two parallel stride-2 separable units summed, PReLU, a third separable
unit, plus a separable shortcut, PReLU.

With per-channel PReLU (alpha initialised to 0.25 as in PyTorch), no conv
biases, bias-free SE convolutions and a BN after the bias-free embedding FC,
the trainable parameters are exactly 5,195,130 (original) and 4,866,730
(reduced: 4 normal blocks in stage 3), the report's figures. Inputs are images
normalised as ``(x - 127.5) / 128``.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import FusedBatchNormalization, FusedPReLU, GroupConv2D

__all__ = ["VarGFaceNet", "vargfacenet", "vargfacenet_reduced", "vargfacenet_tiny"]


class _Builder:
    def __init__(self, group_base, se_ratio, implementation, bn_momentum, bn_epsilon):
        self.group_base = group_base
        self.se_ratio = se_ratio
        self.implementation = implementation
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def bn(self, x, name):
        return FusedBatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name
        )(x)

    @staticmethod
    def prelu(x, name):
        return FusedPReLU(
            alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2], name=name
        )(x)

    def separable(self, x, out_channels, stride, factor, pw_act, name):
        cin = x.shape[-1]
        x = GroupConv2D(
            cin * factor, 3, strides=stride, padding="same", groups=cin // self.group_base,
            implementation=self.implementation, name=f"{name}_gconv",
        )(x)
        x = self.bn(x, f"{name}_gconv_bn")
        x = self.prelu(x, f"{name}_gconv_act")
        x = layers.Conv2D(out_channels, 1, use_bias=False, kernel_initializer="he_normal",
                          name=f"{name}_pconv")(x)
        x = self.bn(x, f"{name}_pconv_bn")
        if pw_act:
            x = self.prelu(x, f"{name}_pconv_act")
        return x

    def squeeze_excite(self, x, name):
        c = x.shape[-1]
        s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
        s = layers.Conv2D(c // self.se_ratio, 1, use_bias=False, name=f"{name}_reduce")(s)
        s = self.prelu(s, f"{name}_act")
        s = layers.Conv2D(c, 1, use_bias=False, name=f"{name}_expand")(s)
        s = layers.Activation("sigmoid", name=f"{name}_gate")(s)
        return layers.Multiply(name=f"{name}_scale")([x, s])

    def block(self, x, out_channels, stride, factor, name):
        """Normal block (identity shortcut) or, when the shape changes, the head block."""
        if stride == 1 and x.shape[-1] == out_channels:
            shortcut = x
        else:
            shortcut = self.separable(x, out_channels, stride, factor, False, f"{name}_shortcut")
        y = self.separable(x, out_channels, stride, factor, True, f"{name}_sep1")
        y = self.separable(y, out_channels, 1, factor, False, f"{name}_sep2")
        y = self.squeeze_excite(y, f"{name}_se")
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return self.prelu(y, f"{name}_out")

    def down_block(self, x, out_channels, factor, name):
        shortcut = self.separable(x, out_channels, 2, factor, False, f"{name}_shortcut")
        b1 = self.separable(x, out_channels, 2, factor, False, f"{name}_branch1")
        b2 = self.separable(x, out_channels, 2, factor, False, f"{name}_branch2")
        y = layers.Add(name=f"{name}_merge")([b1, b2])
        y = self.prelu(y, f"{name}_merge_act")
        y = self.separable(y, out_channels, 1, factor, False, f"{name}_sep2")
        y = layers.Add(name=f"{name}_add")([y, shortcut])
        return self.prelu(y, f"{name}_out")


def VarGFaceNet(
    input_shape=(112, 112, 3),
    normal_blocks=(2, 6, 3),
    channels=(40, 80, 160, 320),
    last_channels=1024,
    embedding_dim=512,
    group_base=8,
    se_ratio=4,
    factor=2,
    implementation="auto",
    bn_momentum=0.9,
    bn_epsilon=2e-5,
    name="vargfacenet",
):
    """Build a VarGFaceNet embedding model (images -> ``embedding_dim`` vector).

    Args:
        input_shape: HxWx3; H and W must be divisible by 16. The embedding's
            group conv covers the whole final map (7x7 at 112x112).
        normal_blocks: normal blocks after the down-sampling block of stages
            2, 3 and 4 (report: 2, 6, 3; reduced: 2, 4, 3).
        channels: widths of the head and of stages 2-4 (multiples of ``group_base``).
        last_channels: width of the embedding's pointwise/group conv.
        embedding_dim: size of the output embedding.
        group_base: input channels per group of every variable group conv.
        se_ratio: squeeze-excitation reduction.
        factor: channel expansion of the group convs inside stages.
        implementation: grouped-conv path, see :class:`kerasface.layers.GroupConv2D`.
    """
    h, w = input_shape[0], input_shape[1]
    if h % 16 or w % 16:
        raise ValueError(f"input height and width must be divisible by 16, got {input_shape}")
    if len(channels) != 4 or len(normal_blocks) != 3:
        raise ValueError("channels needs 4 widths and normal_blocks 3 counts")
    for c in (*channels, last_channels):
        if c % group_base:
            raise ValueError(f"channel width {c} is not a multiple of group_base={group_base}")
    b = _Builder(group_base, se_ratio, implementation, bn_momentum, bn_epsilon)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Conv2D(channels[0], 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name="conv1")(inputs)
    x = b.bn(x, "conv1_bn")
    x = b.prelu(x, "conv1_act")
    x = b.block(x, channels[0], stride=2, factor=1, name="head")
    for s, repeats in enumerate(normal_blocks):
        stage = s + 2
        x = b.down_block(x, channels[s + 1], factor, name=f"stage{stage}_down")
        for i in range(repeats):
            x = b.block(x, channels[s + 1], stride=1, factor=factor, name=f"stage{stage}_block{i + 1}")

    # Embedding setting.
    x = layers.Conv2D(last_channels, 1, use_bias=False, kernel_initializer="he_normal",
                      name="embed_expand")(x)
    x = b.bn(x, "embed_expand_bn")
    x = b.prelu(x, "embed_expand_act")
    kernel = (h // 16, w // 16)
    x = GroupConv2D(last_channels, kernel, padding="valid", groups=last_channels // group_base,
                    implementation=implementation, name="embed_gconv")(x)
    x = b.bn(x, "embed_gconv_bn")
    x = layers.Conv2D(last_channels // 2, 1, use_bias=False, kernel_initializer="he_normal",
                      name="embed_pconv")(x)
    x = b.bn(x, "embed_pconv_bn")
    x = b.prelu(x, "embed_pconv_act")
    x = layers.Flatten(name="embed_flatten")(x)
    x = layers.Dense(embedding_dim, use_bias=False, name="embed_fc")(x)
    x = FusedBatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, dtype="float32",
                                name="embedding")(x)
    return keras.Model(inputs, x, name=name)


def vargfacenet(**kwargs):
    """The report's original VarGFaceNet (stage repeats 2 / 6 / 3)."""
    kwargs.setdefault("name", "vargfacenet")
    return VarGFaceNet(normal_blocks=(2, 6, 3), **kwargs)


def vargfacenet_reduced(**kwargs):
    """The report's reduced VarGFaceNet (stage 3 with 4 normal blocks)."""
    kwargs.setdefault("name", "vargfacenet_reduced")
    return VarGFaceNet(normal_blocks=(2, 4, 3), **kwargs)


def vargfacenet_tiny(**kwargs):
    """A narrow, shallow VarGFaceNet (same block types) for tests and smoke runs."""
    kwargs.setdefault("name", "vargfacenet_tiny")
    kwargs.setdefault("channels", (16, 32, 64, 128))
    kwargs.setdefault("last_channels", 256)
    kwargs.setdefault("embedding_dim", 128)
    return VarGFaceNet(normal_blocks=(1, 1, 1), **kwargs)
