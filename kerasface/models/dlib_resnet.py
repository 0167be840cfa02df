"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a Keras model.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp`` (``anet_type``), layer for layer,
so that the weights of dlib's ``.dat`` file (read by :mod:`kerasface.pretrained.dlib_dat`) give
the same 128-d descriptors as dlib's ``compute_face_descriptor``:

=========  ========  ===========================================================
stage      output    layers (dlib's padding: k // 2 where the stride is 1, 0 where it is 2)
=========  ========  ===========================================================
input      150x150   RGB 0..255; ``(x - mean) / 256``, mean (122.782, 117.001, 104.298)
stem       72x72     7x7 conv 32 stride 2 (no padding), affine, ReLU
pool       35x35     3x3 max pool stride 2 (no padding)
level4     35x35     3 x residual [3x3 32, 3x3 32]
level3     17x17     residual_down 64, 3 x residual 64
level2     8x8       residual_down 128, 2 x residual 128
level1     4x4       residual_down 256, 2 x residual 256
level0     2x2       residual_down 256
avg_pool   256       average over everything
embedding  128       fully connected, no bias (``fc_no_bias``); dlib's descriptor
=========  ========  ===========================================================

A residual block is conv 3x3 (stride s), affine, ReLU, conv 3x3, affine, plus the shortcut,
ReLU. Every convolution has a bias. ``affine`` is dlib's inference-time batch norm: a
per-channel ``gamma * x + beta`` (:class:`ChannelAffine`). The shortcut of a
``residual_down`` block is a 2x2 average pool with stride 2 (no padding) of the block's input;
dlib's ``add_prev`` adds tensors of different shapes as if the smaller one were zero-padded
at its end (more channels, and, in level1 and level0, a larger map: the strided 3x3 convolution
gives 3x3 and 1x1 where the 2x2 pool gives 4x4 and 2x2): :class:`ZeroPadAdd`.

Parameters: 5,614,592 (convolution weights and biases, affine gamma and beta, the
256x128 embedding), all of dlib's: the same count as the ``.dat`` file's parameter tensors.

The model's first layer is :class:`kerasface.layers.FacePreprocessing`: it takes RGB faces
with 0..255 values (uint8 or float) and carries the model's :class:`kerasface.face_spec.FaceSpec`.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from kerasface.layers import FacePreprocessing

__all__ = [
    "ChannelAffine",
    "DLIB_MEANS",
    "DLIB_RESNET_V1_LEVELS",
    "ZeroPadAdd",
    "dlib_resnet_v1",
    "dlib_resnet_v1_layer_plan",
]

#: ``input_rgb_image_sized``'s per-channel means (red, green, blue), as stored in the ``.dat``.
DLIB_MEANS = (122.782, 117.001, 104.298)
#: ``input_rgb_image_sized`` divides by 256 after subtracting the means.
DLIB_SCALE = 256.0

#: Bottom-up: (level name, filters, whether its first block is a ``residual_down``, blocks).
DLIB_RESNET_V1_LEVELS = (
    ("level4", 32, False, 3),
    ("level3", 64, True, 4),
    ("level2", 128, True, 3),
    ("level1", 256, True, 3),
    ("level0", 256, True, 1),
)


def _register(cls):
    return keras.saving.register_keras_serializable(package="kerasface")(cls)


@_register
class ChannelAffine(keras.layers.Layer):
    """``gamma * x + beta`` per channel (last axis): dlib's ``affine`` layer (batch norm at inference)."""

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@_register
class ZeroPadAdd(keras.layers.Layer):
    """Sum of two NHWC tensors of possibly different height, width and channels (dlib's ``add_prev``).

    The output has the larger of each dimension; a tensor smaller in a dimension counts as
    zero beyond its end (dlib's ``tt::add`` with mismatched shapes). Height, width and
    channels must be known when the layer is built.
    """

    def build(self, input_shape):
        a, b = input_shape
        for shape in (a, b):
            if any(d is None for d in shape[1:]):
                raise ValueError(f"{self.name}: height, width and channels must be static, got {shape}")
        self.out_dims = tuple(max(int(x), int(y)) for x, y in zip(a[1:], b[1:]))

    def _pad(self, x):
        shape = tuple(int(d) for d in x.shape[1:])
        if shape == self.out_dims:
            return x
        return ops.pad(x, [(0, 0)] + [(0, o - s) for s, o in zip(shape, self.out_dims)])

    def call(self, inputs):
        a, b = inputs
        return self._pad(a) + self._pad(b)

    def compute_output_shape(self, input_shape):
        a, b = input_shape
        dims = tuple(max(int(x), int(y)) for x, y in zip(a[1:], b[1:]))
        return (a[0],) + dims


def dlib_resnet_v1_layer_plan() -> list[tuple[str, str]]:
    """dlib's layers with parameters, bottom-up, as ``(dlib kind, keras layer name)``.

    ``kind`` is ``"con"``, ``"affine"`` or ``"fc"``; the order is the order in which dlib's
    ``.dat`` stores them (its serialisation writes a layer after everything below it).
    """
    plan = [("con", "stem_conv"), ("affine", "stem_affine")]
    for level, _filters, _down, blocks in DLIB_RESNET_V1_LEVELS:
        for i in range(1, blocks + 1):
            p = f"{level}_block{i}"
            plan += [("con", f"{p}_conv1"), ("affine", f"{p}_affine1"),
                     ("con", f"{p}_conv2"), ("affine", f"{p}_affine2")]
    plan.append(("fc", "embedding"))
    return plan


def dlib_resnet_v1(input_shape=(150, 150, 3), spec: dict | None = None, means=DLIB_MEANS,
                   name: str = "dlib_resnet_v1") -> keras.Model:
    """dlib's face-recognition ResNet v1 with fresh weights (150x150x3 RGB 0..255 in, 128-d out).

    ``input_shape``: dlib's weights are for 150x150; other static sizes of at least 131 build
    (the layout is fully convolutional up to the average pool).
    ``spec``: a :class:`kerasface.face_spec.FaceSpec` as a dict, carried by the first layer
    (:class:`kerasface.layers.FacePreprocessing`). ``means``: the input means (red, green, blue);
    :func:`kerasface.pretrained.load` passes the ones read from the ``.dat`` file.
    """
    inputs = keras.Input(tuple(input_shape), name="face")
    x = FacePreprocessing(offset=[float(m) for m in means], scale=DLIB_SCALE, spec=spec,
                          name="preprocessing")(inputs)
    x = layers.Conv2D(32, 7, strides=2, padding="valid", name="stem_conv")(x)
    x = ChannelAffine(name="stem_affine")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    for level, filters, down, blocks in DLIB_RESNET_V1_LEVELS:
        for i in range(1, blocks + 1):
            p = f"{level}_block{i}"
            stride = 2 if (down and i == 1) else 1
            # dlib's con_: padding k // 2 where the stride is 1, none where it is 2
            y = layers.Conv2D(filters, 3, strides=stride, padding="same" if stride == 1 else "valid",
                              name=f"{p}_conv1")(x)
            y = ChannelAffine(name=f"{p}_affine1")(y)
            y = layers.ReLU(name=f"{p}_relu1")(y)
            y = layers.Conv2D(filters, 3, padding="same", name=f"{p}_conv2")(y)
            y = ChannelAffine(name=f"{p}_affine2")(y)
            shortcut = x
            if stride == 2:
                shortcut = layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{p}_pool")(x)
            x = ZeroPadAdd(name=f"{p}_add")([y, shortcut])
            x = layers.ReLU(name=f"{p}_out")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(128, use_bias=False, name="embedding", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)
