"""Everyday face recognition with any kerasface model: :func:`represent`, :func:`verify`, :func:`find`
(also ``kerasface.verify`` etc.), the model's :class:`~kerasface.face_spec.FaceSpec` (:func:`spec_of`)
and whole-folder embeddings (:func:`embed_tree`, :class:`Gallery`).

Submodules, bottom up: ``spec`` (which FaceSpec a model follows), ``loading`` (a model from a name, a
``.keras`` file or a run folder), ``faces`` (photo -> face crops), ``embedding`` (crops -> unit
embeddings), ``gallery`` (a folder's embeddings, ``.npz`` / ``.csv``, resumable), ``api`` (the calls).
Imported lazily: ``import kerasface.recognition`` loads none of them.
"""

from kerasface._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "represent": "api", "verify": "api", "find": "api",
    "spec_of": "spec", "run_face_spec": "spec", "read_run_spec": "spec", "FACE_SPEC_NAME": "spec",
    "FaceModel": "loading", "load_face_model": "loading", "DEFAULT_MODEL": "loading",
    "embed_tree": "gallery", "load_gallery": "gallery", "Gallery": "gallery",
    "embed_crops": "embedding", "compare": "embedding",
})
