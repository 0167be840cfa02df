"""Which :class:`~kerasface.face_spec.FaceSpec` a model follows: from the model itself, its run folder, or its input.

Three places, in this order (:func:`spec_of`):

1. a :class:`~kerasface.layers.FacePreprocessing` layer inside the model (its ``spec``: the model
   scales its own 0..255 input, ``input_scaling="in-model"``);
2. the run folder that holds the model: ``face_spec.json`` (written by every trainer,
   :func:`kerasface.training.run_folder.write_face_spec`), or for runs older than that file the
   same spec worked out from its ``config.json`` and ``metrics.json`` (:func:`run_face_spec`);
3. defaults from the model's input shape: a centre crop of the whole photo scaled by
   ``(x - 127.5) / 128``, cosine similarity, no threshold.

How the run's faces were prepared is read from its data: a folder written by ``kerasface align``
holds ``align_config.json`` (MTCNN's five points on the ArcFace template), and a ``kerasface pack``
folder names its source folder in ``index.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras

from kerasface.data.align_run import CONFIG_NAME as ALIGN_CONFIG_NAME
from kerasface.face_spec import FaceSpec
from kerasface.layers import carried_face_spec, find_face_preprocessing

logger = logging.getLogger("kerasface.recognition")

__all__ = ["FACE_SPEC_NAME", "data_alignment", "find_face_preprocessing", "read_run_spec", "run_face_spec",
           "spec_of"]

#: The file of a run folder saying how the run's faces were prepared (a :meth:`FaceSpec.to_dict`).
FACE_SPEC_NAME = "face_spec.json"
#: The score names of the evaluation (``metrics.json``'s ``verification.score``) a FaceSpec can carry.
_SPEC_SCORES = ("cosine", "l2")


def data_alignment(data) -> dict | None:
    """The ``align_config.json`` of the faces at ``data`` (a ``kerasface align`` folder, or a ``kerasface pack``
    folder of one); None for photos that were not aligned (or a zip)."""
    if not data:
        return None
    folder = Path(data)
    for candidate in (folder, folder / "lfw"):
        cfg = candidate / ALIGN_CONFIG_NAME
        if cfg.is_file():
            try:
                return json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
    index = folder / "index.json"
    if index.is_file():
        try:
            source = json.loads(index.read_text(encoding="utf-8")).get("source")
        except (OSError, ValueError, AttributeError):
            return None
        if source and Path(source).resolve() != folder.resolve():
            return data_alignment(source)
    return None


def run_face_spec(settings: dict, verification: dict | None = None, metric: str | None = None) -> FaceSpec:
    """The FaceSpec of a training run: its resolved ``settings`` (``config.json``), the final evaluation
    (``metrics.json``'s ``"verification"``, for the threshold) and the metric it verifies with.

    ``image_size`` and ``center_crop`` are the run's; the alignment is ``"mtcnn"`` when its data were
    aligned by ``kerasface align`` (:func:`data_alignment`), else ``"none"`` (a centre crop); the
    input scaling is kerasface's ``(x - 127.5) / 128`` (every trainer's). The metric is ``metric``, else
    the evaluation's score, else cosine; the threshold is the evaluation's best-accuracy threshold when
    the evaluation scored with that metric.
    """
    if "image_size" not in settings:
        raise ValueError("the run's settings have no image_size")
    aligned = data_alignment(settings.get("data"))
    if aligned is not None and float(aligned.get("margin") or 0.0) != 0.0:
        logger.warning("the run's faces were aligned with margin %s; a FaceSpec records no margin",
                       aligned.get("margin"))
    score = (verification or {}).get("score")
    metric = metric or (score if score in _SPEC_SCORES else "cosine")
    threshold = source = None
    if verification and score == metric and verification.get("best_threshold") is not None:
        threshold = float(verification["best_threshold"])
        acc = verification.get("best_threshold_accuracy")
        source = (f"the training run's final evaluation: best accuracy"
                  f"{f' ({acc:.4f})' if acc is not None else ''} on its {verification.get('pairs', '?')} "
                  f"evaluation pairs (tuned on those same pairs)")
    return FaceSpec(image_size=int(settings["image_size"]),
                    alignment="mtcnn" if aligned is not None else "none",
                    center_crop=float(settings.get("center_crop", 1.0)) if aligned is None else 1.0,
                    input_scaling="kerasface", metric=metric, threshold=threshold, threshold_source=source)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_run_spec(run_folder) -> FaceSpec | None:
    """The FaceSpec a run folder records: ``face_spec.json``, else worked out from ``config.json`` (and
    ``metrics.json``) of a run older than that file; None when the folder has neither."""
    folder = Path(run_folder)
    spec_file = folder / FACE_SPEC_NAME
    if spec_file.is_file():
        try:
            return FaceSpec.from_dict(_read_json(spec_file))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{spec_file}: not a face spec ({e})") from None
    config = folder / "config.json"
    if not config.is_file():
        return None
    settings = _read_json(config)
    if "image_size" not in settings:
        return None
    metrics = _read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else {}
    return run_face_spec(settings, metrics.get("verification"))


def _input_size(model: keras.Model) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ValueError(f"model {model.name!r} takes input of shape {shape}, not [batch, height, width, 3] faces "
                         f"of a fixed size")
    return int(shape[1]), int(shape[2])


def spec_of(model: keras.Model, run_folder=None) -> FaceSpec:
    """How ``model`` wants its faces: its :class:`FacePreprocessing` layer's spec, else the spec ``run_folder``
    records (:func:`read_run_spec`), else defaults from its input shape (centre crop of the whole photo,
    kerasface scaling, cosine, no threshold). The crop size always comes from the model's input when fixed."""
    layer = find_face_preprocessing(model)
    spec = carried_face_spec(model)
    if spec is not None:
        if spec.input_scaling != "in-model":
            spec = spec.replace(input_scaling="in-model")
    elif run_folder is not None:
        spec = read_run_spec(run_folder)
    size = _input_size(model)
    if spec is None:
        return FaceSpec(image_size=size, alignment="none", input_scaling="in-model" if layer is not None
                        else "kerasface")
    if spec.image_size != size:
        raise ValueError(f"model {model.name!r} takes {size[0]}x{size[1]} faces but its face spec says "
                         f"{spec.image_size[0]}x{spec.image_size[1]}")
    return spec
