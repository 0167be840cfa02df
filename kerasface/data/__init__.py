"""Data layer, one module per role.

- ``sources``: image sources (folder, zip, ``kerasface pack`` shards) and ``open_image_source``;
  ``records``: the pack folder's format, read without TensorFlow; ``lfw``: the LFW pairs lists;
  ``pair_csv``: labelled path pairs in a CSV, and ``read_pairs_list`` for either kind;
- ``identities``: compact file lists grouped by identity; ``images``: decoding (``ImageDecoder``,
  the one decoder every reader uses), ``load_images``;
- ``sampling``: epoch, chunk and P x K plans; ``loaders``: chunked loading; ``pipelines``: the
  ``tf.data`` pipelines over chunks (P x K batches, offline triplets); ``pairs``: verification pairs;
- ``augment``, ``lowlight``, ``align`` / ``align_run``, ``tfrecord`` (pack / read shards),
  ``insightface_bin``, ``locations``.

Names are re-exported lazily so that ``kerasface.data.sources`` and ``kerasface.data.lfw``
(stdlib only) can be imported without loading OpenCV or TensorFlow.
"""

from __future__ import annotations

from kerasface._lazy import lazy_exports

_EXPORTS = {
    # sources.py (stdlib only): folder, zip and pack-shard image sources
    "ImageSource": "sources",
    "FolderSource": "sources",
    "ZipSource": "sources",
    "ShardSource": "sources",
    "open_image_source": "sources",
    # lfw.py (stdlib only): the LFW pairs lists
    "lfw_relpath": "lfw",
    "Pair": "lfw",
    "parse_pairs": "lfw",
    "resolve_pairs": "lfw",
    # pair_csv.py (stdlib only): labelled path pairs in a CSV; either kind of pairs list
    "PathPair": "pair_csv",
    "is_pairs_csv": "pair_csv",
    "parse_pairs_csv": "pair_csv",
    "read_pairs_list": "pair_csv",
    # images.py (numpy, cv2): decoding
    "CorruptImageError": "images",
    "ImageDecoder": "images",
    "crop_resize": "images",
    "decode_image": "images",
    "load_images": "images",
    # lowlight.py (tensorflow, matplotlib)
    "low_light": "lowlight",
    "save_lowlight_grid": "lowlight",
    # identities.py (numpy): compact file lists grouped by identity
    "IdentityIndex": "identities",
    "fold_identities": "identities",
    # loaders.py (numpy, cv2): chunked loading
    "Chunk": "loaders",
    "ChunkedLoader": "loaders",
    # pipelines.py (numpy; tensorflow only for the datasets)
    "pk_batches": "pipelines",
    "embed_images": "pipelines",
    "apply_triplet_selector": "pipelines",
    "triplet_dataset": "pipelines",
    "offline_triplet_dataset": "pipelines",
    # augment.py (tensorflow): seeded augmentations of reports 001 / 003
    "make_augment": "augment",
    "augment_dataset": "augment",
    "save_augment_grid": "augment",
    "Report001Augment": "augment",
    "Report003Augment": "augment",
    # sampling.py (numpy): epoch, chunk and P x K plans
    "capped_epoch_rows": "sampling",
    "pk_plan": "sampling",
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
    "read_shards": "tfrecord",
    # records.py (stdlib only): the pack folder's format
    "read_index": "records",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
