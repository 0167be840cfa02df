"""MTCNN face detection and 5-point similarity alignment to the ArcFace template.

The pieces, from the bottom up:

* :data:`ARCFACE_TEMPLATE` -- the five reference points (eye centres, nose tip,
  mouth corners) of the standard 112x112 ArcFace crop, and
  :func:`face_template`, the same points for a ``size`` x ``size`` crop with an
  optional ``margin`` of extra context; :data:`DLIB_TEMPLATE`, where the same five
  points fall in dlib's 150x150 face chips (``template="dlib"``);
* :func:`estimate_similarity` -- the least-squares similarity transform
  (rotation, uniform scale, translation; no reflection, no shear) between two
  point sets, Umeyama's closed form, in NumPy;
* :func:`warp_face` -- warps an image so its five landmarks land on the
  template (the region is cropped and, when shrinking a lot, pre-shrunk with
  ``INTER_AREA`` first, so very large photos are warped from the original
  pixels without aliasing);
* :class:`MTCNNDetector` -- the ``mtcnn`` 1.0 package (weights ship in its
  wheel, runs offline) behind a small callable interface
  ``detector(list_of_rgb_images) -> list of lists of Face``; the network is
  built lazily, once per process and device, and a list of images is detected
  in one batched call per image shape;
* :func:`align_images` / :func:`align_face` -- detection (on a copy downscaled
  to ``detect_max_side`` for very large images), face choice (largest or most
  central, minimum confidence and size), warp, and the no-face fallback;
* :func:`tf_align_fn` -- the same as a ``tf.data`` map step for small sets.

The folder/zip runner behind ``kerasface align SRC DST`` (atomic writes,
resume, CSV report) is :func:`kerasface.data.align_run.align_tree`.

Any callable with the detector signature can replace MTCNN (tests inject a
counting fake); :class:`Face` is what it returns.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import NamedTuple

import cv2
import numpy as np

from ..config import check_command_setting
from . import images as _images
from .images import CorruptImageError

__all__ = [
    "ARCFACE_TEMPLATE",
    "DLIB_TEMPLATE",
    "TEMPLATES",
    "LANDMARK_NAMES",
    "AlignOptions",
    "AlignResult",
    "Face",
    "MTCNNDetector",
    "align_detected",
    "align_face",
    "align_images",
    "choose_face",
    "default_detector",
    "detect_for_alignment",
    "center_crop",
    "decode_for_alignment",
    "estimate_similarity",
    "face_template",
    "format_confidence",
    "tf_align_fn",
    "transform_points",
    "warp_face",
]

#: The five ArcFace reference points of a 112x112 crop, (x, y) in pixels, in the
#: order left eye, right eye, nose tip, left mouth corner, right mouth corner
#: ("left" = the image's left side, i.e. the subject's right). Same order as
#: MTCNN's landmarks.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963],
     [73.5318, 51.5014],
     [56.0252, 71.7366],
     [41.5493, 92.3655],
     [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112

#: Where MTCNN's five points (same order as above) fall in dlib's 150x150 face chips
#: (``dlib.get_face_chip(image, shape, 150, 0.25)``: dlib's HOG detector, 5-point shape predictor
#: and mean-face similarity transform), the chips dlib's ResNet face descriptor was trained on.
#: Measured, not derived (dlib's 5 points are eye corners and the nose bottom, not MTCNN's):
#: the mean over LFW images of MTCNN's points mapped into dlib's chip with dlib's own chip
#: transform (``benchmarks/calibrate_dlib_template.py``: 391 of 400 seeded LFW images where both
#: found the same face; per-point standard deviation 1.7 px at the eyes, 4-6 px at the nose and
#: mouth; dlib's chip rebuilt from that transform differs from ``get_face_chip``'s by 0.49 / 255
#: per pixel on average; docs/alignment.md).
DLIB_TEMPLATE = np.array(
    [[46.9585, 44.8011],
     [100.4792, 44.7397],
     [73.4151, 76.7495],
     [50.1095, 104.0266],
     [97.4127, 104.0202]], dtype=np.float64)
DLIB_SIZE = 150

#: Alignment templates: name -> (five points, the crop side they are given for).
TEMPLATES = {"arcface": (ARCFACE_TEMPLATE, ARCFACE_SIZE), "dlib": (DLIB_TEMPLATE, DLIB_SIZE)}
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

PICKS = ("largest", "central")
ON_NO_FACE = ("skip", "center")

# Statuses of one image (the ``status`` column of the align report).
ALIGNED = "aligned"                  # exactly one face passed the filters; warped to the template
ALIGNED_MULTI = "aligned_multi"      # several passed; the one chosen by ``pick`` was warped
FALLBACK = "fallback_center"         # no face passed; a centre crop was written instead
NO_FACE = "no_face"                  # no face passed; nothing written (on_no_face="skip")
CORRUPT = "corrupt"                  # the file could not be decoded (empty, truncated, not an image)
ERROR = "error"                      # anything else went wrong for this one file (message in reason)
STATUSES = (ALIGNED, ALIGNED_MULTI, FALLBACK, NO_FACE, CORRUPT, ERROR)


# --------------------------------------------------------------------------- geometry
def face_template(size: int = ARCFACE_SIZE, margin: float = 0.0, template: str = "arcface") -> np.ndarray:
    """The five template points ``[5, 2]`` for a ``size`` x ``size`` crop.

    ``template``: ``"arcface"`` (:data:`ARCFACE_TEMPLATE`, the 112x112 ArcFace framing) or
    ``"dlib"`` (:data:`DLIB_TEMPLATE`, dlib's 150x150 face chips with their 0.25 padding).
    ``margin`` adds context around the template's framing: the template's square (112 or
    150) is padded by ``margin`` x its side on every side and the result is
    scaled to ``size``.  ``margin=0`` gives ``ARCFACE_TEMPLATE * size / 112``
    (the same framing at any resolution); ``margin=0.1`` makes the face 1/1.2 as
    large, with a 10 % border of context each side.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {tuple(TEMPLATES)}, got {template!r}")
    points, side = TEMPLATES[template]
    size = int(size)
    if size < 16:
        raise ValueError(f"crop size must be at least 16 pixels, got {size}")
    if not 0.0 <= margin < 2.0:
        raise ValueError(f"margin must be in [0, 2), got {margin}")
    pad = side * float(margin)
    return (points + pad) * (size / (side + 2.0 * pad))


def estimate_similarity(src, dst, weights=None) -> np.ndarray:
    """Least-squares similarity transform mapping ``src`` points onto ``dst``.

    Finds the scale ``c``, rotation ``R`` (a proper rotation: reflections are
    excluded) and translation ``t`` minimising ``sum w_i ||dst_i - (c R src_i + t)||^2``
    with Umeyama's closed form (IEEE PAMI 13(4), 1991): SVD of the
    (weighted) cross-covariance of the centred point sets.  ``src`` and ``dst`` are
    ``[N, 2]`` with ``N >= 2``; ``weights`` ``[N]`` (non-negative, default all 1) say how
    much each point counts.  Returns the ``[2, 3]`` float64 matrix
    ``[c R | t]`` (the layout ``cv2.warpAffine`` takes).  Raises ``ValueError``
    for mismatched shapes or when all (weighted) ``src`` points coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need two [N, 2] point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points must be finite")
    w = np.ones(src.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (src.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {src.shape[0]} finite non-negative numbers, not all 0, got {w}")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    sc, dc = src - mu_s, dst - mu_d
    var_s = float(w @ (sc ** 2).sum(axis=1))
    if var_s <= 1e-12:
        raise ValueError("source points coincide: no similarity transform is defined")
    cov = (dc * w[:, None]).T @ sc          # [2, 2] weighted cross-covariance dst x src
    u, d, vt = np.linalg.svd(cov)
    s = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:   # the best orthogonal map would reflect
        s[-1] = -1.0
    rot = u @ np.diag(s) @ vt
    scale = float((d * s).sum() / var_s)
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def transform_points(matrix, points) -> np.ndarray:
    """Apply a ``[2, 3]`` affine matrix to points ``[N, 2]``."""
    m = np.asarray(matrix, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """``outer o inner`` for [2, 3] affine matrices (apply ``inner`` first)."""
    a = outer[:, :2] @ inner[:, :2]
    t = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return np.hstack([a, t[:, None]])


# Below this scale (output px per source px) the source region is shrunk with INTER_AREA
# before the (then roughly unit-scale) bilinear warp, to avoid aliasing.
_PRESHRINK_BELOW = 0.75


def warp_face(image: np.ndarray, landmarks, size: int = ARCFACE_SIZE, margin: float = 0.0,
              matrix: np.ndarray | None = None, template: str = "arcface") -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` so that ``landmarks`` ``[5, 2]`` land on :func:`face_template`.

    Returns ``(crop, matrix)``: the uint8 ``[size, size, C]`` crop and the
    ``[2, 3]`` matrix mapping source pixel coordinates to crop coordinates
    (``transform_points(matrix, landmarks)`` is the landmarks' position in the
    crop).  Pass ``matrix`` to reuse a transform.  Only the source region that
    maps into the crop is touched; when the transform shrinks by more than
    1/0.75, that region is first resized with ``INTER_AREA`` (anti-aliased),
    then warped bilinearly.  Pixels from outside the image are black.
    """
    if matrix is None:
        matrix = estimate_similarity(landmarks, face_template(size, margin, template))
    matrix = np.asarray(matrix, dtype=np.float64)
    h, w = image.shape[:2]
    a = matrix[:, :2]
    scale = float(np.sqrt(abs(np.linalg.det(a))))
    # Source region that maps into the crop: the preimage of the output square's corners.
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    pre = (corners - matrix[:, 2]) @ np.linalg.inv(a).T
    x0 = int(max(0, np.floor(pre[:, 0].min()) - 2))
    y0 = int(max(0, np.floor(pre[:, 1].min()) - 2))
    x1 = int(min(w, np.ceil(pre[:, 0].max()) + 3))
    y1 = int(min(h, np.ceil(pre[:, 1].max()) + 3))
    if x1 <= x0 or y1 <= y0:   # the crop lies wholly outside the image
        shape = (size, size) + image.shape[2:]
        return np.zeros(shape, dtype=image.dtype), matrix
    region = image[y0:y1, x0:x1]
    m = _compose(matrix, np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]]))   # region px -> crop px
    if scale < _PRESHRINK_BELOW:
        rh, rw = region.shape[:2]
        nw, nh = max(1, int(round(rw * scale))), max(1, int(round(rh * scale)))
        region = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
        # small px -> region px is diag(rw / nw, rh / nh)
        m = _compose(m, np.array([[rw / nw, 0.0, 0.0], [0.0, rh / nh, 0.0]]))
    crop = cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop, matrix


def center_crop(image: np.ndarray, size: int, fraction: float = 1.0) -> np.ndarray:
    """Central square of ``fraction`` x the shorter side, resized to ``size`` (the no-face fallback)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"centre-crop fraction must be in (0, 1], got {fraction}")
    h, w = image.shape[:2]
    side = max(1, int(round(min(h, w) * fraction)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    img = image[y0:y0 + side, x0:x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


# --------------------------------------------------------------------------- decoding
def _png_has_alpha(data: bytes) -> bool:
    # IHDR colour type (byte 25): 4 = grey + alpha, 6 = RGB + alpha.
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] in (4, 6)


def decode_for_alignment(data: bytes, name: str) -> tuple[np.ndarray, list[str]]:
    """Decode encoded image bytes to uint8 RGB ``[H, W, 3]`` and a list of notes.

    Accepts what OpenCV reads (JPEG, PNG, BMP, WebP, PNM, ...), applying the
    EXIF orientation.  Greyscale is replicated to three channels, 16-bit
    samples are scaled to 8 bits (``v / 257``, rounded) and an alpha channel is
    dropped; each conversion adds a note (``"greyscale"``, ``"16-bit"``,
    ``"alpha dropped"``) that the report shows.  Raises
    :class:`~kerasface.data.images.CorruptImageError` naming ``name`` for empty,
    truncated or undecodable data, for a format whose header size is not checked
    and for a header declaring more than ``kerasface.data.images.MAX_PIXELS``
    pixels (:func:`~kerasface.data.images.check_image_size`, before decoding).
    """
    _images.check_image_size(data, name)  # decompression bombs and unchecked formats: refused before decoding
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    if img is None or img.size == 0:
        raise CorruptImageError(f"corrupt image {name!r}: cannot decode {len(data)} bytes (truncated or not an image)")
    notes = []
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append("16-bit")
    elif img.dtype != np.uint8:   # float (EXR/HDR) or other: scale the finite range to 0..255
        notes.append(f"{img.dtype} samples rescaled")
        f = np.nan_to_num(img.astype(np.float64))
        lo, hi = float(f.min()), float(f.max())
        img = np.zeros(f.shape, np.uint8) if hi <= lo else np.round((f - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
        notes.append("greyscale")
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        notes.append("alpha dropped")
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if _png_has_alpha(data) and "alpha dropped" not in notes:
        notes.append("alpha dropped")
    return np.ascontiguousarray(img), notes


# --------------------------------------------------------------------------- detection
def format_confidence(confidence: float, decimals: int = 4) -> str:
    """A detector confidence with ``decimals`` decimals, rounded DOWN (from its exact decimal repr), so a value
    below a threshold never reads as the threshold: 0.89996 shows ``0.8999``, never ``0.9000``."""
    value = Decimal(repr(float(confidence))).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_FLOOR)
    return f"{value:.{decimals}f}"


class Face(NamedTuple):
    """One detected face in pixel coordinates of the image it was found in.

    ``box`` float ``[4]`` (x1, y1, x2, y2); ``confidence`` in [0, 1];
    ``landmarks`` float ``[5, 2]`` (x, y) in :data:`LANDMARK_NAMES` order.
    """

    box: np.ndarray
    confidence: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """The longer side of the box (MTCNN boxes are square before clipping to the image)."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def scaled(self, factor: float) -> Face:
        """The same face with coordinates multiplied by ``factor``."""
        return Face(self.box * factor, self.confidence, self.landmarks * factor)


Detector = Callable[[Sequence[np.ndarray]], Sequence[Sequence[Face]]]

#: MTCNN's default smallest face (pixels). mtcnn 1.0 sizes its image pyramid as if this were
#: always 20: with a larger ``min_face_size`` the last pyramid levels shrink below PNet's 12-px
#: window and the whole batch silently returns no face. Larger minimum sizes are therefore
#: done by shrinking the image instead (:func:`detect_for_alignment`).
MTCNN_MIN_FACE = 20

_MTCNN_MODELS: dict = {}
_MTCNN_LOCK = threading.Lock()


def _mtcnn_model(device: str):
    """The ``mtcnn.MTCNN`` for ``device``, built on first use and shared by the process."""
    with _MTCNN_LOCK:
        model = _MTCNN_MODELS.get(device)
        if model is None:
            from mtcnn import MTCNN

            model = _MTCNN_MODELS[device] = MTCNN(device=device)
        return model


class MTCNNDetector:
    """``detector(images) -> [[Face, ...], ...]`` backed by the ``mtcnn`` 1.0 package.

    ``images`` is a list of uint8 RGB arrays ``[H, W, 3]``.  Images of the same
    shape go through MTCNN in one batched call (the package pads a batch to its
    largest image, so mixing shapes would waste work); if a batched call fails,
    its images are retried one by one and an image that still fails gets no
    faces.  ``min_face_size`` is MTCNN's smallest searched face (pixels at the
    detection resolution); ``thresholds`` are its P/R/O-Net score thresholds.
    The network is built on the first call and cached per ``device`` for the
    whole process.  ``calls`` and ``images_seen`` count the work done.

    ``min_face_size`` must be 12..20: mtcnn 1.0 builds a broken pyramid above 20 (every face
    of the batch is lost); to skip small faces, shrink the images instead, as
    :func:`detect_for_alignment` does for ``AlignOptions.min_face_size``.
    """

    def __init__(self, min_face_size: int = 20, thresholds: Sequence[float] = (0.6, 0.7, 0.8),
                 scale_factor: float = 0.709, device: str = "CPU:0"):
        if not 12 <= min_face_size <= MTCNN_MIN_FACE:
            raise ValueError(f"MTCNNDetector min_face_size must be 12..{MTCNN_MIN_FACE} (mtcnn 1.0 finds no face "
                             f"above 20; shrink the images instead, e.g. AlignOptions(min_face_size=...)), "
                             f"got {min_face_size}")
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)
        self.device = device
        self.calls = 0
        self.images_seen = 0

    @property
    def model(self):
        return _mtcnn_model(self.device)

    def _run(self, batch: list[np.ndarray]) -> np.ndarray:
        t_p, t_r, t_o = self.thresholds
        out = self.model.detect_faces(
            [b.astype(np.float32) for b in batch], output_type="numpy", box_format="xyxy",
            min_face_size=self.min_face_size, scale_factor=self.scale_factor,
            threshold_pnet=t_p, threshold_rnet=t_r, threshold_onet=t_o)
        return np.asarray(out, dtype=np.float64).reshape(-1, 16)

    @staticmethod
    def _faces(rows: np.ndarray) -> list[Face]:
        # mtcnn 1.0 rows: image id, x1, y1, x2, y2, confidence, 5 landmark x, 5 landmark y
        faces = [Face(r[1:5].copy(), float(r[5]), np.stack([r[6:11], r[11:16]], axis=1)) for r in rows]
        return sorted(faces, key=lambda f: -f.confidence)

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        images = list(images)
        self.calls += 1
        self.images_seen += len(images)
        result: list[list[Face]] = [[] for _ in images]
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            if img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"detector expects RGB images [H, W, 3], got shape {img.shape}")
            if min(img.shape[:2]) >= 12:      # MTCNN's smallest window; smaller images have no faces
                groups.setdefault(img.shape, []).append(i)
        for idx in groups.values():
            try:
                rows = self._run([images[i] for i in idx])
                for j, i in enumerate(idx):
                    result[i] = self._faces(rows[rows[:, 0] == j])
            except Exception:  # one odd image must not cost the whole batch: retry singly
                for i in idx:
                    try:
                        result[i] = self._faces(self._run([images[i]]))
                    except Exception:
                        result[i] = []
        return result


_DEFAULT_DETECTOR: MTCNNDetector | None = None


def default_detector() -> MTCNNDetector:
    """The process-wide default :class:`MTCNNDetector` (MTCNN's own defaults)."""
    global _DEFAULT_DETECTOR
    if _DEFAULT_DETECTOR is None:
        _DEFAULT_DETECTOR = MTCNNDetector()
    return _DEFAULT_DETECTOR


# --------------------------------------------------------------------------- alignment
@dataclass(frozen=True)
class AlignOptions:
    """How faces are chosen and cropped.

    * ``size``: output side in pixels (112 = ArcFace; 160 / 224 for FaceNet-style models);
    * ``margin``: extra context around the template's framing, as a fraction of it per side
      (see :func:`face_template`);
    * ``template``: ``"arcface"`` (ArcFace's 112x112 framing) or ``"dlib"`` (dlib's face chips:
      ``AlignOptions(size=150, template="dlib")`` makes the chips of dlib's ResNet descriptor);
    * ``pick``: among several faces, ``"largest"`` box or most ``"central"`` box centre;
    * ``min_confidence``: faces scored lower are ignored;
    * ``min_face_size``: faces whose box (longer side, original pixels) is smaller are ignored;
      above 20 it also speeds detection up: the detector sees the image shrunk by
      ``20 / min_face_size`` (MTCNN's smallest face is 20 px), about 2x faster at 40 on LFW;
    * ``on_no_face``: ``"skip"`` (record, write nothing) or ``"center"`` (write a centre crop);
    * ``center_crop``: fraction of the shorter side the fallback keeps (0.58 matches LFW's
      250x250 framing to about the ArcFace scale);
    * ``detect_max_side``: images whose longer side exceeds this are downscaled for
      detection only; the warp always reads the original pixels.
    """

    size: int = 112
    margin: float = 0.0
    template: str = "arcface"
    pick: str = "largest"
    min_confidence: float = 0.9
    min_face_size: float = 20.0
    on_no_face: str = "skip"
    center_crop: float = 1.0
    detect_max_side: int = 1024

    def __post_init__(self):
        face_template(self.size, self.margin, self.template)   # validates size, margin and template
        if self.pick not in PICKS:
            raise ValueError(f"pick must be one of {PICKS}, got {self.pick!r}")
        if self.on_no_face not in ON_NO_FACE:
            raise ValueError(f"on_no_face must be one of {ON_NO_FACE}, got {self.on_no_face!r}")
        check_command_setting("min_confidence", self.min_confidence, flag="min_confidence")
        if self.min_face_size < 0:
            raise ValueError(f"min_face_size must be >= 0, got {self.min_face_size}")
        check_command_setting("center_crop", self.center_crop, flag="center_crop")
        if self.detect_max_side < 48:
            raise ValueError(f"detect_max_side must be at least 48, got {self.detect_max_side}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class AlignResult:
    """The outcome for one image.

    ``status`` is one of :data:`STATUSES`; ``crop`` the uint8 ``[size, size, 3]``
    output (``None`` for ``no_face`` / ``corrupt`` / ``error``); ``face`` the
    chosen :class:`Face` in original-image pixels (``None`` unless aligned);
    ``matrix`` the ``[2, 3]`` original -> crop transform; ``n_detected`` the
    faces MTCNN returned and ``n_faces`` those that passed the confidence and
    size filters; ``reason`` a human-readable explanation (why no face, which
    face was picked, input conversions).
    """

    status: str
    crop: np.ndarray | None = None
    face: Face | None = None
    matrix: np.ndarray | None = None
    n_detected: int = 0
    n_faces: int = 0
    reason: str = ""

    @property
    def landmarks(self) -> np.ndarray | None:
        return None if self.face is None else self.face.landmarks


def _resolve_options(options: AlignOptions | None, overrides: dict) -> AlignOptions:
    opts = options or AlignOptions()
    return dataclasses.replace(opts, **overrides) if overrides else opts


def _detection_copy(image: np.ndarray, max_side: int, min_face_size: float = 0.0) -> tuple[np.ndarray, float]:
    """``(image for the detector, factor)``: the image scaled by ``factor <= 1``.

    The factor shrinks images whose longer side exceeds ``max_side``, and images in which
    faces below ``min_face_size`` (> 20) px are not wanted, so that ``min_face_size`` becomes
    MTCNN's 20-pixel minimum: the same search, on fewer pixels.
    """
    h, w = image.shape[:2]
    f = min(1.0, max_side / float(max(h, w)))
    if min_face_size > MTCNN_MIN_FACE:
        f = min(f, MTCNN_MIN_FACE / float(min_face_size))
    if f >= 1.0:
        return image, 1.0
    nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    return small, f


def choose_face(faces: Sequence[Face], image_shape, opts: AlignOptions) -> tuple[Face | None, int, str]:
    """Apply the confidence and size filters, then ``opts.pick``.

    Returns ``(face or None, number that passed the filters, reason)``.
    """
    n = len(faces)
    if n == 0:
        return None, 0, "no face detected"
    keep = [f for f in faces if f.confidence >= opts.min_confidence]
    if not keep:
        best = max(f.confidence for f in faces)
        return None, 0, (f"{n} face(s) detected, none with confidence >= {opts.min_confidence:g} "
                         f"(best {format_confidence(best)})")
    big = [f for f in keep if f.size >= opts.min_face_size]
    if not big:
        largest = max(f.size for f in keep)
        return None, 0, (f"{len(keep)} face(s) detected, none at least {opts.min_face_size:g} px "
                         f"(largest {largest:.0f} px)")
    if opts.pick == "largest":
        chosen = max(big, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    else:
        h, w = image_shape[:2]
        c = np.array([w / 2.0, h / 2.0])
        chosen = min(big, key=lambda f: float(np.hypot(*((f.box[:2] + f.box[2:]) / 2.0 - c))))
    reason = "" if len(big) == 1 else f"{len(big)} faces passed the filters; picked the {opts.pick} one"
    return chosen, len(big), reason


def align_detected(image: np.ndarray, faces: Sequence[Face], opts: AlignOptions,
                   notes: Sequence[str] = ()) -> AlignResult:
    """Choose among ``faces`` (found in ``image``), warp, or take the no-face path: the step after detection."""
    chosen, n_ok, why = choose_face(faces, image.shape, opts)
    extra = "; ".join(["input " + ", ".join(notes)] if notes else [])
    if chosen is None:
        reason = "; ".join(filter(None, [why, extra]))
        if opts.on_no_face == "center":
            return AlignResult(FALLBACK, crop=center_crop(image, opts.size, opts.center_crop),
                               n_detected=len(faces), reason=reason)
        return AlignResult(NO_FACE, n_detected=len(faces), reason=reason)
    crop, matrix = warp_face(image, chosen.landmarks, opts.size, opts.margin, template=opts.template)
    status = ALIGNED if n_ok == 1 else ALIGNED_MULTI
    return AlignResult(status, crop=crop, face=chosen, matrix=matrix, n_detected=len(faces), n_faces=n_ok,
                       reason="; ".join(filter(None, [why, extra])))


def detect_for_alignment(images: Sequence[np.ndarray], detector: Detector | None, max_side: int,
                         min_face_size: float = 0.0) -> list[list[Face]]:
    """One detector call for all ``images``; faces in original pixels.

    Each image is first downscaled so its longer side is at most ``max_side`` and, when
    ``min_face_size`` > 20, so that a ``min_face_size`` face is 20 px (MTCNN's smallest).
    """
    detector = detector or default_detector()
    smalls, factors = zip(*(_detection_copy(img, max_side, min_face_size) for img in images)) if images else ((), ())
    found = detector(list(smalls))
    if len(found) != len(images):
        raise ValueError(f"detector returned {len(found)} results for {len(images)} images")
    return [[f if k == 1.0 else f.scaled(1.0 / k) for f in faces] for faces, k in zip(found, factors)]


def align_images(images: Sequence[np.ndarray], options: AlignOptions | None = None, *,
                 detector: Detector | None = None, notes: Sequence[Sequence[str]] | None = None,
                 **overrides) -> list[AlignResult]:
    """Detect and align a list of uint8 RGB images with ONE detector call.

    ``options`` (an :class:`AlignOptions`) and keyword ``overrides`` of its
    fields set the crop and face choice; ``detector`` defaults to the shared
    :class:`MTCNNDetector`.  Returns one :class:`AlignResult` per image.
    """
    opts = _resolve_options(options, overrides)
    images = [_as_rgb_uint8(img) for img in images]
    faces = detect_for_alignment(images, detector, opts.detect_max_side, opts.min_face_size)
    notes = notes or [()] * len(images)
    return [align_detected(img, f, opts, n) for img, f, n in zip(images, faces, notes)]


def _as_rgb_uint8(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.round(np.nan_to_num(img)), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an image [H, W], [H, W, 1], [H, W, 3] or [H, W, 4], got shape {np.shape(image)}")
    return np.ascontiguousarray(img)


def align_face(image, *, detector: Detector | None = None, options: AlignOptions | None = None,
               **overrides) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Align the face in one image: ``(crop, landmarks)``.

    ``image`` is an RGB array (uint8, or uint16 / float in [0, 1]; grey and
    RGBA are converted).  ``crop`` is uint8 ``[size, size, 3]`` with the
    chosen face's eyes, nose and mouth corners on :func:`face_template`;
    ``landmarks`` are that face's five points ``[5, 2]`` in ``image`` pixels.
    When no face passes the filters, returns ``(None, None)``, or
    ``(centre crop, None)`` with ``on_no_face="center"``.  Keyword overrides
    are :class:`AlignOptions` fields (``size=160, margin=0.1, pick="central"``,
    ...).  Use :func:`align_images` for several images (one batched detection)
    or for the details (status, confidence, transform).
    """
    r = align_images([image], options, detector=detector, **overrides)[0]
    return r.crop, r.landmarks


# --------------------------------------------------------------------------- tf.data step
def tf_align_fn(options: AlignOptions | None = None, *, detector: Detector | None = None, **overrides):
    """A ``tf.data`` map function: image -> ``(crop, found)``, for small sets.

    The returned function takes a uint8 image tensor ``[H, W, 3]`` (or
    ``[H, W, 1]``) or a scalar string of encoded image bytes, runs
    :func:`align_images` on it through ``tf.numpy_function``, and returns the
    uint8 ``[size, size, 3]`` crop and a bool ``found`` (False when the centre
    crop stood in because no face passed the filters, or the bytes were
    corrupt: then the crop is black).  Detection runs one image at a time in
    Python, so use it with ``num_parallel_calls=1`` on sets small enough to
    align on the fly; align big sets once with ``kerasface align``.
    """
    import tensorflow as tf

    opts = dataclasses.replace(_resolve_options(options, overrides), on_no_face="center")
    size = opts.size

    def _np(x):
        try:
            if isinstance(x, (bytes, np.bytes_)) or (isinstance(x, np.ndarray) and x.dtype.kind in "SO"):
                img, notes = decode_for_alignment(bytes(x.item() if isinstance(x, np.ndarray) else x), "<tensor>")
            else:
                img, notes = x, ()
            r = align_images([img], opts, detector=detector, notes=[notes])[0]
        except CorruptImageError:
            return np.zeros((size, size, 3), np.uint8), np.bool_(False)
        return r.crop, np.bool_(r.status in (ALIGNED, ALIGNED_MULTI))

    def fn(image):
        crop, found = tf.numpy_function(_np, [image], [tf.uint8, tf.bool], stateful=False)
        crop.set_shape([size, size, 3])
        found.set_shape([])
        return crop, found

    return fn
