"""Inception-ResNet-v1 (report 002's teacher): parameter counts, layout and names.

The two 218x178 models (FaceNet layout through the registry, and the report's
own no-BN / no-bottleneck teacher) are built once per module, never trained.
Build, predict (real faces), get_config and fresh-process reload of the registered
backbone: test_backbones.py.
"""

from __future__ import annotations

import inspect

import keras
import pytest

from kerasface.models import build_backbone, inception_resnet_v1, profile_model
from kerasface.models.inception_resnet import REPORT_TEACHER_CLASSES, REPORT_TEACHER_PARAMS


def hand_count():
    """(conv kernels, channels of BN-followed convs, channels of the residual 'up' convs), from the layout."""
    convs = [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (1, 1, 64, 80), (3, 3, 80, 192), (3, 3, 192, 256)]
    ups = []
    c = 256
    for _ in range(5):
        convs += [(1, 1, c, 32), (1, 1, c, 32), (3, 3, 32, 32), (1, 1, c, 32), (3, 3, 32, 32), (3, 3, 32, 32)]
        ups.append((96, c))
    convs += [(3, 3, c, 384), (1, 1, c, 192), (3, 3, 192, 192), (3, 3, 192, 256)]
    c = 896
    for _ in range(10):
        convs += [(1, 1, c, 128), (1, 1, c, 128), (1, 7, 128, 128), (7, 1, 128, 128)]
        ups.append((256, c))
    convs += [(1, 1, c, 256), (3, 3, 256, 384), (1, 1, c, 256), (3, 3, 256, 256),
              (1, 1, c, 256), (3, 3, 256, 256), (3, 3, 256, 256)]
    c = 1792
    for _ in range(6):
        convs += [(1, 1, c, 192), (1, 1, c, 192), (1, 3, 192, 192), (3, 1, 192, 192)]
        ups.append((384, c))
    kernels = sum(a * b * i * o for a, b, i, o in convs) + sum(i * o for i, o in ups)
    return kernels, sum(o for *_, o in convs), sum(o for _, o in ups)


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    facenet = build_backbone("inception_resnet_v1")
    report = build_backbone("inception_resnet_v1_nobn")  # report 002's teacher.py, at its 224x224
    return facenet, profile_model(facenet), report, profile_model(report)


def test_report_teacher_param_count_is_exact(models):
    _, _, report, prof = models
    kernels, bn_channels, up_channels = hand_count()
    assert (kernels, bn_channels, up_channels) == (22_514_528, 14_288, 20_992)
    assert prof.non_trainable_params == 0 and prof.trainable_params == kernels + bn_channels + up_channels
    assert tuple(report.output_shape) == (None, 1792) and tuple(report.input_shape) == (None, 224, 224, 3)
    logits = keras.layers.Dense(REPORT_TEACHER_CLASSES, name="logits")(report.output)  # with bias
    full = keras.Model(report.input, logits)
    assert full.count_params() == REPORT_TEACHER_PARAMS == 26_781_288
    convs = [layer for layer in report.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.use_bias for c in convs)
    assert not [layer for layer in report.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_facenet_variant_counts_and_no_integer_class_count(models):
    facenet, prof, _, _ = models
    kernels, bn_channels, up_channels = hand_count()
    trainable = kernels + bn_channels + up_channels + 1792 * 512 + 512  # BN beta only (scale=False)
    assert (prof.trainable_params, prof.non_trainable_params) == (trainable, 2 * (bn_channels + 512))
    assert (prof.trainable_params, prof.total_params) == (23_467_824, 23_497_424)
    for base in (prof.trainable_params, prof.total_params):
        for per_class in (512, 513):  # classifier on the 512-d embedding without / with bias
            assert (REPORT_TEACHER_PARAMS - base) % per_class != 0
    assert prof.trainable_params + 513 * REPORT_TEACHER_CLASSES == 24_678_504


def test_layout_shapes_and_names(models):
    facenet, _, _, _ = models
    assert tuple(facenet.input_shape) == (None, 218, 178, 3)  # the registry uses report 002's size
    assert inspect.signature(inception_resnet_v1).parameters["input_shape"].default == (160, 160, 3)
    names = [layer.name for layer in facenet.layers]
    shapes = {"stem_conv6_relu": (24, 19, 256), "block35_5_out": (24, 19, 256),
              "reduction_a_concat": (11, 9, 896), "block17_10_out": (11, 9, 896),
              "reduction_b_concat": (5, 4, 1792), "block8_6_add": (5, 4, 1792)}
    for name, shape in shapes.items():
        assert tuple(facenet.get_layer(name).output.shape[1:]) == shape, name
    scales = {"block35": 0.17, "block17": 0.10, "block8": 0.20}
    for kind, n in (("block35", 5), ("block17", 10), ("block8", 6)):
        assert f"{kind}_{n + 1}_add" not in names
        for i in range(1, n + 1):
            want = 1.0 if (kind, i) == ("block8", 6) else scales[kind]
            assert facenet.get_layer(f"{kind}_{i}_scale").scale == pytest.approx(want)
            assert facenet.get_layer(f"{kind}_{i}_up").use_bias
            assert (f"{kind}_{i}_out" in names) == ((kind, i) != ("block8", 6))  # last: no activation
    assert facenet.get_layer("dropout").rate == pytest.approx(0.2)
    assert not facenet.get_layer("bottleneck").use_bias and facenet.get_layer("bottleneck").units == 512
    bn = facenet.get_layer("embedding")
    assert isinstance(bn, keras.layers.BatchNormalization) and not bn.scale and bn.epsilon == 1e-3
    assert tuple(facenet.output_shape) == (None, 512)


def test_bad_sizes():
    with pytest.raises(ValueError, match="at least 75"):
        inception_resnet_v1(input_shape=(64, 64, 3))
    with pytest.raises(ValueError):
        inception_resnet_v1(dropout=1.0)
