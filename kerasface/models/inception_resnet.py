"""Inception-ResNet-v1, FaceNet (davidsandberg) variant: report 002's teacher.

Layout (Szegedy et al. 2016 as in davidsandberg/facenet ``inception_resnet_v1.py``,
the file report 002's ``model/teacher.py`` copies); sizes for a 160x160 input:

==============  ========  ====================================================
block           output    layers
==============  ========  ====================================================
stem            17x17x256 3x3/2 32 valid, 3x3 32 valid, 3x3 64 same, 3x3/2 max
                          pool valid, 1x1 80, 3x3 192 valid, 3x3/2 256 valid
block35_1..5    17x17x256 Inception-ResNet-A, residual scale 0.17, ReLU
reduction_a     8x8x896   3x3/2 384 | 1x1 192, 3x3 192, 3x3/2 256 | 3x3/2 max pool
block17_1..10   8x8x896   Inception-ResNet-B (1x7, 7x1), scale 0.10, ReLU
reduction_b     3x3x1792  1x1 256, 3x3/2 384 | 1x1 256, 3x3/2 256 |
                          1x1 256, 3x3 256, 3x3/2 256 | 3x3/2 max pool
block8_1..5     3x3x1792  Inception-ResNet-C (1x3, 3x1), scale 0.20, ReLU
block8_6        3x3x1792  Inception-ResNet-C, scale 1.0, no activation
avg_pool        1792      global average pool
dropout         1792      dropout rate 0.2 (FaceNet's keep probability 0.8)
bottleneck      512       Dense 512 without bias, then BatchNormalization
                          (``embedding``): the 512-d "pre-logits"
==============  ========  ====================================================

FaceNet repeats block8 five times at scale 0.20 and then adds a sixth block8
at scale 1.0 without activation ("the last one without activation" is that
sixth block, not the fifth). Every convolution is followed by BN (beta only,
``scale=False``: TF-slim's default, momentum 0.995, epsilon 0.001) and ReLU,
except the residual "up" projection of each block (1x1 conv with bias, no BN,
no activation), which is scaled by a ``Rescaling`` layer before the ``Add``.

Parameter counts. Convolution kernels: 22,514,528; BN channels: 14,288; up
projection biases: 20,992. With ``embedding_dim=512`` (this builder's default):

=====================================  ===========  ==========  ===========
model                                  trainable    BN stats    Keras total
=====================================  ===========  ==========  ===========
backbone (512-d embedding)             23,467,824      29,600   23,497,424
+ classifier Dense(512 -> 2360), bias  24,678,504      29,600   24,708,104
=====================================  ===========  ==========  ===========

(trainable = kernels + BN beta 14,288 + up biases 20,992 + bottleneck
1792 * 512 + its BN beta 512; BN stats = 2 * (14,288 + 512)). No integer
class count makes this variant reach the report's 26,781,288: solving
``23,467,824 + K * 513 = 26,781,288`` gives K = 6458.99 (bias) and
``K * 512`` gives 6471.6 (no bias); with Keras totals 6401.3 / 6413.8.

The report's teacher is not this variant. Report 002's ``model/teacher.py``
calls ``inception_resnet_v1(..., bottleneck_layer_size=class_num)`` *outside*
FaceNet's ``arg_scope``: its convolutions keep TF-slim's defaults (bias, no BN)
and the "Bottleneck" fully connected layer (with bias) maps the 1792-d pooled
features straight to the classes, with no 512-d embedding. That model counts

    22,514,528 kernels + 35,280 biases (14,288 + 20,992) = 22,549,808
    + Dense(1792 -> 2360) with bias: 1792 * 2360 + 2360 =  4,231,480
                                                          = 26,781,288

exactly the report's figure, with 2360 classes (the identities of its
CelebA-based course data set; ``REPORT_TEACHER_CLASSES``). Build it with
``inception_resnet_v1(input_shape=(218, 178, 3), embedding_dim=None,
batch_norm=False)`` plus a ``Dense(2360)`` classifier (all trainable; no BN
statistics). Report 002's data are CelebA's aligned 218x178 images
(``REPORT_INPUT_SHAPE``); its authors' ``data_reader.py`` trains on a crop of
them resized to 224x224 and tests at 218x178. The registry's
``"inception_resnet_v1"`` uses 218x178, ``"inception_resnet_v1_nobn"`` the
training size 224x224, the builder FaceNet's 160x160.

Names: ``stem_conv1`` ... ``stem_conv6``, ``stem_pool``; ``block35_3_branch2_conv2``
(+ ``_bn``, ``_relu``), ``block35_3_up``, ``block35_3_scale``, ``block35_3_add``,
``block35_3_out``; ``reduction_a_branch1_conv3``, ``reduction_a_pool``,
``reduction_a_concat``; ``avg_pool``, ``dropout``, ``bottleneck``,
``embedding``. No name contains "1x1". Inputs are images normalised as
``(x - 127.5) / 128`` (the smallest input is 75x75); the embedding is float32
under mixed precision.
"""

from __future__ import annotations

import keras
from keras import layers

from kerasface.layers import FusedBatchNormalization

__all__ = [
    "REPORT_INPUT_SHAPE",
    "REPORT_TEACHER_CLASSES",
    "REPORT_TEACHER_PARAMS",
    "inception_resnet_v1",
]

REPORT_INPUT_SHAPE = (218, 178, 3)  # report 002's images (CelebA aligned crops, resized back)
REPORT_TEACHER_CLASSES = 2360  # reproduces the report's 26,781,288 (module docstring)
REPORT_TEACHER_PARAMS = 26_781_288
MIN_INPUT = 75  # smallest height/width whose reduction_b output is at least 1x1


class _Builder:
    def __init__(self, batch_norm, bn_momentum, bn_epsilon):
        self.batch_norm = batch_norm
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon

    def conv(self, x, filters, kernel, name, strides=1, padding="same", activation=True):
        """Conv, then BN (beta only) and ReLU; without BN the conv keeps its bias (TF-slim)."""
        x = layers.Conv2D(filters, kernel, strides=strides, padding=padding,
                          use_bias=not self.batch_norm, kernel_initializer="glorot_uniform",
                          name=name)(x)
        if self.batch_norm:
            x = FusedBatchNormalization(momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                                        scale=False, name=f"{name}_bn")(x)
        if activation:
            x = layers.ReLU(name=f"{name}_relu")(x)
        return x

    def residual(self, x, branches, scale, activation, name):
        mixed = layers.Concatenate(name=f"{name}_concat")(branches)
        up = layers.Conv2D(x.shape[-1], 1, use_bias=True, name=f"{name}_up")(mixed)
        up = layers.Rescaling(scale, name=f"{name}_scale")(up)
        x = layers.Add(name=f"{name}_add")([x, up])
        if activation:
            x = layers.ReLU(name=f"{name}_out")(x)
        return x

    def block35(self, x, scale, name, activation=True):
        b0 = self.conv(x, 32, 1, f"{name}_branch0_conv1")
        b1 = self.conv(x, 32, 1, f"{name}_branch1_conv1")
        b1 = self.conv(b1, 32, 3, f"{name}_branch1_conv2")
        b2 = self.conv(x, 32, 1, f"{name}_branch2_conv1")
        b2 = self.conv(b2, 32, 3, f"{name}_branch2_conv2")
        b2 = self.conv(b2, 32, 3, f"{name}_branch2_conv3")
        return self.residual(x, [b0, b1, b2], scale, activation, name)

    def block17(self, x, scale, name, activation=True):
        b0 = self.conv(x, 128, 1, f"{name}_branch0_conv1")
        b1 = self.conv(x, 128, 1, f"{name}_branch1_conv1")
        b1 = self.conv(b1, 128, (1, 7), f"{name}_branch1_conv2")
        b1 = self.conv(b1, 128, (7, 1), f"{name}_branch1_conv3")
        return self.residual(x, [b0, b1], scale, activation, name)

    def block8(self, x, scale, name, activation=True):
        b0 = self.conv(x, 192, 1, f"{name}_branch0_conv1")
        b1 = self.conv(x, 192, 1, f"{name}_branch1_conv1")
        b1 = self.conv(b1, 192, (1, 3), f"{name}_branch1_conv2")
        b1 = self.conv(b1, 192, (3, 1), f"{name}_branch1_conv3")
        return self.residual(x, [b0, b1], scale, activation, name)

    def reduction_a(self, x, name="reduction_a"):
        b0 = self.conv(x, 384, 3, f"{name}_branch0_conv1", strides=2, padding="valid")
        b1 = self.conv(x, 192, 1, f"{name}_branch1_conv1")
        b1 = self.conv(b1, 192, 3, f"{name}_branch1_conv2")
        b1 = self.conv(b1, 256, 3, f"{name}_branch1_conv3", strides=2, padding="valid")
        b2 = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_pool")(x)
        return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2])

    def reduction_b(self, x, name="reduction_b"):
        b0 = self.conv(x, 256, 1, f"{name}_branch0_conv1")
        b0 = self.conv(b0, 384, 3, f"{name}_branch0_conv2", strides=2, padding="valid")
        b1 = self.conv(x, 256, 1, f"{name}_branch1_conv1")
        b1 = self.conv(b1, 256, 3, f"{name}_branch1_conv2", strides=2, padding="valid")
        b2 = self.conv(x, 256, 1, f"{name}_branch2_conv1")
        b2 = self.conv(b2, 256, 3, f"{name}_branch2_conv2")
        b2 = self.conv(b2, 256, 3, f"{name}_branch2_conv3", strides=2, padding="valid")
        b3 = layers.MaxPooling2D(3, strides=2, padding="valid", name=f"{name}_pool")(x)
        return layers.Concatenate(name=f"{name}_concat")([b0, b1, b2, b3])


def inception_resnet_v1(input_shape=(160, 160, 3), embedding_dim=512, dropout=0.2,
                        batch_norm=True, bn_momentum=0.995, bn_epsilon=1e-3,
                        name="inception_resnet_v1"):
    """Build Inception-ResNet-v1 (images -> embedding), FaceNet's layout.

    Args:
        input_shape: HxWx3, H and W at least 75 (FaceNet: 160x160; report 002's
            images: 218x178, ``REPORT_INPUT_SHAPE``; its training input: 224x224).
        embedding_dim: size of the bias-free Dense bottleneck + BN ("pre-logits",
            FaceNet: 512, 128 in older models); ``None``: no bottleneck, the
            embedding is the 1792-d pooled (and dropped-out) features, as in
            report 002's teacher.
        dropout: dropout rate before the bottleneck (FaceNet's keep
            probability 0.8 -> 0.2); 0 for none.
        batch_norm: ``True``: every conv but the residual "up" ones is
            bias-free and followed by BN (FaceNet); ``False``: convs with bias
            and no BN (report 002's ``teacher.py``, see the module docstring).
        bn_momentum, bn_epsilon: BatchNormalization settings (TF-slim decay
            0.995, epsilon 0.001).
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
    if min(input_shape[0], input_shape[1]) < MIN_INPUT:
        raise ValueError(f"input height and width must be at least {MIN_INPUT}, got {input_shape}")
    if embedding_dim is not None and int(embedding_dim) < 1:
        raise ValueError(f"embedding_dim must be positive or None, got {embedding_dim}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    b = _Builder(bool(batch_norm), bn_momentum, bn_epsilon)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = b.conv(inputs, 32, 3, "stem_conv1", strides=2, padding="valid")
    x = b.conv(x, 32, 3, "stem_conv2", padding="valid")
    x = b.conv(x, 64, 3, "stem_conv3")
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    x = b.conv(x, 80, 1, "stem_conv4", padding="valid")
    x = b.conv(x, 192, 3, "stem_conv5", padding="valid")
    x = b.conv(x, 256, 3, "stem_conv6", strides=2, padding="valid")
    for i in range(1, 6):
        x = b.block35(x, 0.17, f"block35_{i}")
    x = b.reduction_a(x)
    for i in range(1, 11):
        x = b.block17(x, 0.10, f"block17_{i}")
    x = b.reduction_b(x)
    for i in range(1, 6):
        x = b.block8(x, 0.20, f"block8_{i}")
    x = b.block8(x, 1.0, "block8_6", activation=False)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if embedding_dim is None:
        x = layers.Dropout(dropout, dtype="float32", name="embedding")(x)
    else:
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Dense(int(embedding_dim), use_bias=not batch_norm, name="bottleneck")(x)
        if batch_norm:
            x = FusedBatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, scale=False,
                                        dtype="float32", name="embedding")(x)
        else:
            x = layers.Activation("linear", dtype="float32", name="embedding")(x)
    return keras.Model(inputs, x, name=name)
