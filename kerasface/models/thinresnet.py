"""ThinResNet34 / ThinResNet50 / ThinResNet50_V2 of report 001: an interpretation, and the drawn layout.

Report 001's table draws bottleneck stages ``[1x1 48, 3x3 48, 1x1 192]`` ...
after a 7x7/64 stem, but the parameter counts it gives ("about 4.9M / 6M /
12.4M", rounded) do not fit that drawing: bottleneck stages of those widths
count 13-21 % more (see ``docs/experiments/thinresnet.md``). The default
builders are an **interpretation**: ResNets with squeeze-excitation *basic*
blocks of the table's inner widths and a 48-channel stem (the layout of Chung et
al.'s ``ResNetSE`` speaker models, from which the report's ThinResNets come),
chosen because they land on the rounded figures. Their exact counts (below) are
counts of this interpretation, not figures of the report. The drawn layout is
``layout="bottleneck"`` (registry ``thin_resnet*_bottleneck``): bottleneck
blocks ``[1x1 c, 3x3 c, 1x1 4c]`` after a 64-channel 7x7 stem, no SE.

The interpretation (``layout="se_basic"``, the default):

==========  ========  ==================  ==================  ==================
stage       output    ThinResNet34        ThinResNet50        ThinResNet50_V2
==========  ========  ==================  ==================  ==================
stem        112x112   7x7 conv 48 stride 2, BN, ReLU
pool        56x56     3x3 max pool stride 2
stage1      56x56     [3x3 48, 3x3 48]    x2   x3           x3
stage2      28x28     [3x3 96, 3x3 96]    x3   x4           x4
stage3      14x14     [3x3 128, 3x3 128]  x3   x6           [3x3 192, 3x3 192] x6
stage4      7x7       [3x3 256, 3x3 256]  x3   x3           [3x3 384, 3x3 384] x3
avg_pool              global average pool
embedding   512       Dense 512 (with bias)
==========  ========  ==================  ==================  ==================

Each block is conv 3x3, BN, ReLU, conv 3x3, BN, squeeze-excitation (global
average pool, Dense c/8 + ReLU, Dense c + sigmoid, both with bias; reduction
8), plus the shortcut (identity, or a bias-free projection conv with a 1x1
kernel and BN where the stride or width changes), ReLU. The block code is
:func:`kerasface.models.resnet.ResNetBasic` with ``se_reduction=8``.

Parameter counts of this interpretation, Keras ``count_params()`` (weights,
biases, BN gamma/beta and BN moving mean/variance); the report says only "about
4.9M / 6M / 12.4M":

===============  ==========  ==========  ============
model            trainable   BN stats    total
===============  ==========  ==========  ============
thin_resnet34     4,897,776       7,200    4,904,976
thin_resnet50     6,007,746       9,312    6,017,058
thin_resnet50_v2 12,354,722      12,768   12,367,490
===============  ==========  ==========  ============

(the trainable counts, what ``kerasface summary`` prints first, are 0.1-0.15%
lower). Names: ``stem_conv``, ``stage2_block3_conv1``, ``stage2_block3_se``,
``stage2_block1_proj``, ``embedding`` (see :mod:`kerasface.models.resnet`).
Inputs are images normalised as ``(x - 127.5) / 128``; any size divisible by 32
works (224 in the report).
"""

from __future__ import annotations

from kerasface.models.resnet import ResNetBasic

__all__ = ["DRAWN_TRAINABLE", "LAYOUTS", "THIN_RESNETS", "ThinResNet", "thin_resnet34", "thin_resnet50",
           "thin_resnet50_v2"]

# name -> (blocks per stage, widths per stage, total parameter count of the SE-basic interpretation:
# the report gives only "about 4.9M / 6M / 12.4M")
THIN_RESNETS = {
    "thin_resnet34": ((2, 3, 3, 3), (48, 96, 128, 256), 4_904_976),
    "thin_resnet50": ((3, 4, 6, 3), (48, 96, 128, 256), 6_017_058),
    "thin_resnet50_v2": ((3, 4, 6, 3), (48, 96, 192, 384), 12_367_490),
}


# trainable counts of the drawn bottleneck layout (64-channel stem, no SE, 512-d FC with bias)
DRAWN_TRAINABLE = {"thin_resnet34": 5_918_144, "thin_resnet50": 6_955_904, "thin_resnet50_v2": 14_028_160}
LAYOUTS = ("se_basic", "bottleneck")


def ThinResNet(variant="thin_resnet34", input_shape=(224, 224, 3), stem_channels=None,
               se_reduction=None, embedding_dim=512, l2_normalize=False, bn_momentum=0.9,
               bn_epsilon=1e-5, name=None, layout="se_basic"):
    """Build one of report 001's ThinResNets (images -> ``embedding_dim`` vector).

    ``variant`` is a key of ``THIN_RESNETS``; ``layout="se_basic"`` (default, the
    interpretation: stem 48, SE reduction 8) or ``"bottleneck"`` (the table as
    drawn: stem 64, no SE); ``stem_channels`` / ``se_reduction`` override the
    layout's. The other arguments are those of
    :func:`kerasface.models.resnet.ResNetBasic`.
    """
    try:
        blocks, widths, _ = THIN_RESNETS[variant]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(THIN_RESNETS)}") from None
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    drawn = layout == "bottleneck"
    return ResNetBasic(blocks=blocks, widths=widths, input_shape=input_shape,
                       stem_channels=stem_channels or (64 if drawn else 48),
                       se_reduction=se_reduction if se_reduction is not None else (None if drawn else 8),
                       embedding_dim=embedding_dim, l2_normalize=l2_normalize,
                       bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
                       name=name or (f"{variant}_bottleneck" if drawn else variant),
                       block="bottleneck" if drawn else "basic")


def thin_resnet34(**kwargs):
    """ThinResNet34 (report 001): SE basic blocks 2-3-3-3, widths 48-96-128-256."""
    return ThinResNet("thin_resnet34", **kwargs)


def thin_resnet50(**kwargs):
    """ThinResNet50 (report 001): SE basic blocks 3-4-6-3, widths 48-96-128-256."""
    return ThinResNet("thin_resnet50", **kwargs)


def thin_resnet50_v2(**kwargs):
    """ThinResNet50_V2 (report 001): SE basic blocks 3-4-6-3, widths 48-96-192-384."""
    return ThinResNet("thin_resnet50_v2", **kwargs)
