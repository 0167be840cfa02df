"""Data layer: LFW image sources and pairs lists, image cache, low-light set, tf.data pairs pipeline.

Names are re-exported lazily so that ``kerasface.data.lfw`` (stdlib only) can be
imported without loading OpenCV or TensorFlow.
"""

from __future__ import annotations

from kerasface._lazy import lazy_exports

_EXPORTS = {
    # lfw.py (stdlib only)
    "ImageSource": "lfw",
    "FolderSource": "lfw",
    "ZipSource": "lfw",
    "open_image_source": "lfw",
    "lfw_relpath": "lfw",
    "Pair": "lfw",
    "parse_pairs": "lfw",
    "resolve_pairs": "lfw",
    # images.py (numpy, cv2)
    "CorruptImageError": "images",
    "decode_image": "images",
    "load_images": "images",
    # lowlight.py (tensorflow, matplotlib)
    "low_light": "lowlight",
    "save_lowlight_grid": "lowlight",
    # identities.py (numpy): compact file lists grouped by identity
    "IdentityIndex": "identities",
    "fold_identities": "identities",
    # chunked.py (numpy, cv2; tensorflow only for the datasets)
    "Chunk": "chunked",
    "ChunkedLoader": "chunked",
    "pk_plan": "chunked",
    "pk_batches": "chunked",
    "embed_images": "chunked",
    "select_triplets": "chunked",
    "triplet_dataset": "chunked",
    "offline_triplet_dataset": "chunked",
    # augment.py (tensorflow): seeded augmentations of reports 001 / 003
    "make_augment": "augment",
    "augment_dataset": "augment",
    "save_augment_grid": "augment",
    "Report001Augment": "augment",
    "Report003Augment": "augment",
    # sampling.py (numpy): at most K images per identity per epoch
    "capped_epoch_rows": "sampling",
    # pairs.py (tensorflow)
    "PairData": "pairs",
    "normalize_images": "pairs",
    # align.py (numpy, cv2; mtcnn/tensorflow on first detection), align_run.py
    "ARCFACE_TEMPLATE": "align",
    "AlignOptions": "align",
    "AlignResult": "align",
    "Face": "align",
    "MTCNNDetector": "align",
    "align_face": "align",
    "align_images": "align",
    "decode_for_alignment": "align",
    "estimate_similarity": "align",
    "face_template": "align",
    "tf_align_fn": "align",
    "warp_face": "align",
    "AlignSummary": "align_run",
    "align_tree": "align_run",
    "read_report": "align_run",
    # insightface_bin.py (numpy): InsightFace .bin sets through a restricted unpickler
    "BinSource": "insightface_bin",
    "UnsafePickleError": "insightface_bin",
    "bin_pairs": "insightface_bin",
    "load_bin": "insightface_bin",
    # tfrecord.py (numpy, cv2, tensorflow): TFRecord shards (kerasface pack) and their tf.data reader
    "PackSummary": "tfrecord",
    "pack": "tfrecord",
    "read_index": "tfrecord",
    "read_shards": "tfrecord",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
