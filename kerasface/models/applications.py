"""Backbones from ``keras.applications`` (report 003 also tried ResNet50, EfficientNet-B0 and EfficientNetV2-M).

``keras_application(kind, input_shape=(224, 224, 3), embedding_dim=512, weights=None)`` builds
``keras.applications.<class>(include_top=False, pooling="avg")`` behind an input adapter and
ahead of a ``Dense(embedding_dim)`` named ``embedding`` (report 003 replaced torchvision's
classification layer by one linear layer to the embedding size):

======================  ===========================  =================================  =====================
kind                    keras.applications class     no-top parameters (Keras total)     input adapter
======================  ===========================  =================================  =====================
``resnet50``            ``ResNet50``                 23,587,712                          caffe: RGB -> BGR, minus
                                                                                         the ImageNet means
``efficientnet_b0``     ``EfficientNetB0``           4,049,571                           none (the model
                                                                                         rescales itself)
``efficientnet_v2_m``   ``EfficientNetV2M``          53,150,388                          none (idem)
======================  ===========================  =================================  =====================

kerasface feeds every backbone ``(x - 127.5) / 128``; the adapter first maps that back to
0-255 (``Rescaling(128, offset=127.5)``), then, for ResNet50, applies Keras's "caffe"
preprocessing with a frozen 1x1 convolution (channel swap and mean subtraction: 9 + 3
non-trainable weights; no ``Lambda``, so the model loads in safe mode). So ImageNet weights see
the inputs they were trained on.

``weights=None`` (the default, and what the trainer uses unless ``--pretrained imagenet``)
trains from scratch. ``weights="imagenet"`` needs Keras's weight file: it is downloaded to
``~/.keras/models/`` on first use; without network access the builder raises one line naming
the file to fetch. Report 003 started from torchvision's ImageNet weights; kerasface's presets
start from scratch.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from kerasface.io import first_line

__all__ = ["APPLICATIONS", "keras_application"]

# kind -> (keras.applications attribute, Keras's no-top weight file, its total parameter count without the top)
APPLICATIONS = {
    "resnet50": ("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", 23_587_712),
    "efficientnet_b0": ("EfficientNetB0", "efficientnetb0_notop.h5", 4_049_571),
    "efficientnet_v2_m": ("EfficientNetV2M", "efficientnetv2-m_notop.h5", 53_150_388),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def keras_application(kind="resnet50", input_shape=(224, 224, 3), embedding_dim=512, weights=None, name=None):
    """``keras.applications`` backbone ``kind`` (a key of :data:`APPLICATIONS`) -> ``embedding_dim`` vector.

    ``weights``: ``None`` (from scratch) or ``"imagenet"`` (Keras's pretrained weights; downloaded once).
    """
    try:
        cls_name, weight_file, _ = APPLICATIONS[kind]
    except KeyError:
        raise ValueError(f"unknown application {kind!r}; known: {', '.join(APPLICATIONS)}") from None
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be None or 'imagenet', got {weights!r}")
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = layers.Rescaling(128.0, offset=127.5, name="to_0_255")(inputs)
    if kind == "resnet50":
        swap = np.zeros((1, 1, 3, 3), np.float32)
        for i in range(3):
            swap[0, 0, 2 - i, i] = 1.0  # output channel i (BGR) reads input channel 2 - i (RGB)
        caffe = layers.Conv2D(3, 1, trainable=False, name="caffe_preprocess")
        x = caffe(x)
        caffe.set_weights([swap, -np.asarray(_CAFFE_MEAN_BGR, np.float32)])
    cls = getattr(keras.applications, cls_name)
    try:
        base = cls(include_top=False, weights=weights, input_shape=tuple(input_shape), pooling="avg")
    except Exception as e:
        if weights is None:
            raise
        raise RuntimeError(
            f"--pretrained imagenet: could not get Keras's ImageNet weights for {kind} ({weight_file}): "
            f"{type(e).__name__}: {first_line(e)}; with internet access Keras "
            f"downloads it to ~/.keras/models/ on first use (or place the file there yourself)") from None
    x = base(x)
    out = layers.Dense(int(embedding_dim), dtype="float32", name="embedding")(x)
    return keras.Model(inputs, out, name=name or kind)
