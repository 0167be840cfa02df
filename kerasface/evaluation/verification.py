"""Pair verification for every kind of kerasface model: score the pairs, compute the metrics, write the report.

``evaluate_pairs(model, source, pairs)`` works with

* an **embedding model** (one input): both faces are embedded (optionally with
  flip TTA) and compared by cosine similarity, L2 distance or squared L2
  distance of the L2-normalised embeddings;
* a **Siamese verifier** (two inputs, ``[different, same]`` softmax, report
  000): the score is its "same" probability (averaged with the mirrored pair
  under flip TTA);
* a **triplet graph** (three inputs, report 004): its shared embedding model is used.

Pairs whose images are missing from the source are counted and listed and
left out; pairs touching an undecodable image too. The metrics say over how
many pairs they were computed (``pairs.evaluated``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from kerasface.data.lfw import Pair, open_image_source, parse_pairs, resolve_pairs
from kerasface.evaluation.embeddings import (
    NORMALIZATIONS,
    embedding_submodel,
    extract_embeddings,
    model_image_size,
    model_kind,
)
from kerasface.evaluation.metrics import kfold_accuracy, verification_metrics

__all__ = [
    "METRICS",
    "PairScores",
    "default_pairs_file",
    "VerificationResult",
    "evaluate_pairs",
    "evaluate_to_dir",
    "format_metrics",
    "hardest_cases",
    "score_pairs",
    "write_report",
]

logger = logging.getLogger("kerasface.evaluation")

#: Pair comparison for embedding models. Distances are scored as ``-d``.
METRICS = {
    "cosine": "cosine similarity of the L2-normalised embeddings (higher = same)",
    "l2": "euclidean distance between the L2-normalised embeddings (lower = same)",
    "l2sq": "squared euclidean distance between the L2-normalised embeddings (lower = same)",
}
_N_NAMES = 20


@dataclass
class PairScores:
    """One score per evaluated pair (higher = same), with what was left out and why."""

    scores: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    pairs: list
    kind: str
    score_name: str  # "cosine", "l2", "l2sq" or "same_prob"
    accounting: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_display(self, score_or_threshold):
        """Scores are ``-distance`` internally; show distances as distances."""
        if score_or_threshold is None:
            return None
        return -score_or_threshold if self.score_name in ("l2", "l2sq") else score_or_threshold


def default_pairs_file(data) -> Path:
    """The evaluation list next to an LFW folder or zip: ``pairs.txt`` (View 2, 10 folds), else
    ``pairsDevTest.txt``, else the bundled sample's ``pairsVal.txt``."""
    data = Path(data)
    folder = data if data.is_dir() else data.parent
    for name in ("pairs.txt", "pairsDevTest.txt", "pairsVal.txt"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no pairs.txt, pairsDevTest.txt or pairsVal.txt in {str(folder)!r}; pass --pairs")


def _load_pairs(pairs) -> list[Pair]:
    if isinstance(pairs, (str, os.PathLike)):
        return parse_pairs(pairs)
    return list(pairs)


def score_pairs(model: keras.Model, source, pairs, *, metric: str = "cosine", flip: bool = False, image_size: int | None = None, center_crop: float = 1.0, normalization: str = "kerasface", low_light_seed: int | None = None, batch_size: int = 64, on_missing: str = "skip", verbose="auto") -> PairScores:
    """Score every pair of ``pairs`` (a list of :class:`Pair` or a pairs file) with ``model``."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    source = open_image_source(source)
    requested = _load_pairs(pairs)
    kept, missing = resolve_pairs(requested, source, on_missing=on_missing)
    missing_names = list(dict.fromkeys(r for _, r in missing))
    if not kept:
        raise ValueError(f"none of the {len(requested)} pairs has both images in {source!r}")
    kind = model_kind(model)
    settings = {"center_crop": center_crop, "normalization": normalization, "flip": flip,
                "low_light_seed": low_light_seed}

    if kind == "verifier":
        scores, ok = _verifier_scores(model, source, kept, flip, image_size, center_crop, normalization, low_light_seed,
                                     batch_size, verbose)
        score_name = "same_prob"
        settings.update(image_size=model_image_size(model, image_size), score_description=(
            "Siamese verifier 'same' probability" + (", averaged with the mirrored pair" if flip else "")))
    else:
        emb = extract_embeddings(model, source, [r for p in kept for r in (p.path1, p.path2)],
                                 image_size=image_size, center_crop=center_crop, normalization=normalization,
                                 flip=flip, low_light_seed=low_light_seed, batch_size=batch_size,
                                 verbose=verbose)
        row = emb.index()
        i1 = np.array([row[p.path1] for p in kept])
        i2 = np.array([row[p.path2] for p in kept])
        a, b = emb.vectors[i1], emb.vectors[i2]
        if metric == "cosine":
            scores = np.sum(a * b, axis=1)
        else:
            d2 = np.sum((a - b) ** 2, axis=1)
            scores = -(np.sqrt(d2) if metric == "l2" else d2)
        ok = emb.ok[i1] & emb.ok[i2]
        score_name = metric
        settings.update(
            image_size=model_image_size(embedding_submodel(model), image_size),
            embedding_dim=int(emb.vectors.shape[1]),
            score_description=METRICS[metric],
            flip_note=("flip TTA: embeddings of the image and of its mirror summed, then L2-normalised"
                       if flip else "no flip TTA; embeddings L2-normalised"),
        )
    corrupt = [p for p, g in zip(kept, ok) if not g]
    if corrupt:
        logger.warning("left out %d pair(s) touching undecodable images", len(corrupt))
    good = [p for p, g in zip(kept, ok) if g]
    scores = np.asarray(scores, np.float64)[np.asarray(ok, bool)]
    accounting = {
        "requested": len(requested),
        "evaluated": len(good),
        "missing_pairs": len(requested) - len(kept),
        "missing_images": len(missing_names),
        "missing_names": missing_names[:_N_NAMES],
        "corrupt_pairs": len(corrupt),
        "corrupt_names": list(dict.fromkeys(r for p in corrupt for r in (p.path1, p.path2)))[:_N_NAMES],
        "source": repr(source),
    }
    return PairScores(scores=scores, labels=np.array([p.same for p in good], bool),
                      folds=np.array([p.fold for p in good], int), pairs=good, kind=kind,
                      score_name=score_name, accounting=accounting, settings=settings)


def verifier_head(model: keras.Model) -> keras.Model | None:
    """The part of a :func:`~kerasface.models.SiameseVerifier` after its backbone, as a model
    ``[embedding_a, embedding_b] -> [p(different), p(same)]``; ``None`` for another structure.

    With it a verifier scores N pairs over M distinct images with M backbone
    passes instead of 2N (LFW ``pairs.txt``: 7,701 instead of 12,000).
    """
    names = ("abs_diff", "dropout1", "hidden", "dropout2", "same_prob")
    layers = {layer.name: layer for layer in model.layers}
    if not all(n in layers for n in names):
        return None
    backbone = embedding_submodel(model)
    dim = backbone.outputs[0].shape[-1]
    a = keras.Input((dim,), name="embedding_a")
    b = keras.Input((dim,), name="embedding_b")
    x = layers["abs_diff"]([a, b])
    for n in names[1:]:
        x = layers[n](x)
    return keras.Model([a, b], x, name=f"{model.name}_head")


def _verifier_scores(model, source, pairs, flip, image_size, center_crop, normalization, low_light_seed, batch_size, verbose):
    from kerasface.evaluation.embeddings import embed_views

    head = verifier_head(model)
    if head is None:
        return _verifier_scores_pairwise(model, source, pairs, flip, image_size, center_crop, normalization,
                                         low_light_seed, batch_size, verbose)
    unique, views, ok_img = embed_views(model, source, [r for p in pairs for r in (p.path1, p.path2)],
                                        mirrored=flip, image_size=image_size, center_crop=center_crop,
                                        normalization=normalization, low_light_seed=low_light_seed,
                                        batch_size=batch_size, verbose=verbose)
    row = {r: i for i, r in enumerate(unique)}
    i1 = np.array([row[p.path1] for p in pairs])
    i2 = np.array([row[p.path2] for p in pairs])
    dtype = head.inputs[0].dtype
    scores = [np.asarray(head.predict([v[i1].astype(dtype), v[i2].astype(dtype)], batch_size=1024, verbose=0),
                         np.float64)[:, 1] for v in views]
    return sum(scores) / len(scores), ok_img[i1] & ok_img[i2]


def _verifier_scores_pairwise(model, source, pairs, flip, image_size, center_crop, normalization, low_light_seed, batch_size, verbose):
    """Any two-input model: both faces of every pair through the whole model."""
    import tensorflow as tf

    from kerasface.data.images import load_images
    from kerasface.data.lowlight import low_light
    from kerasface.data.pairs import stable_image_id
    from kerasface.evaluation.embeddings import normalize_pixels

    size = model_image_size(model, image_size)
    unique = list(dict.fromkeys(r for p in pairs for r in (p.path1, p.path2)))
    images, ok_img = load_images(source, unique, size=size, center_crop=center_crop, on_error="skip",
                                 progress=verbose != 0)
    row = {r: i for i, r in enumerate(unique)}
    index = np.array([[row[p.path1], row[p.path2]] for p in pairs], np.int32)
    cache = tf.constant(images)
    ids = tf.constant([stable_image_id(r) for r in unique], tf.int64)

    def run(flipped: bool) -> np.ndarray:
        def load(idx):
            xs = []
            for k in range(2):
                x = tf.cast(tf.gather(cache, idx[:, k]), tf.float32)
                if low_light_seed is not None:
                    x = low_light(x / 255.0, low_light_seed, tf.gather(ids, idx[:, k])) * 255.0
                if flipped:
                    x = tf.reverse(x, axis=[2])
                xs.append(normalize_pixels(x, normalization))
            return (xs[0], xs[1]),

        ds = tf.data.Dataset.from_tensor_slices(index).batch(batch_size).map(load).prefetch(2)
        return np.asarray(model.predict(ds, verbose=verbose), np.float64)[:, 1]

    scores = run(False)
    if flip:
        scores = (scores + run(True)) / 2.0
    ok = ok_img[index[:, 0]] & ok_img[index[:, 1]]
    return scores, ok


@dataclass
class VerificationResult:
    """Scores plus :func:`~kerasface.evaluation.metrics.verification_metrics` in display units."""

    scores: PairScores
    metrics: dict

    def summary(self) -> str:
        return format_metrics(self.metrics)


def evaluate_pairs(model, source, pairs, *, far_targets=(1e-3, 1e-2), **kwargs) -> VerificationResult:
    """Score ``pairs`` (:func:`score_pairs`) and compute every metric.

    Thresholds in the returned metrics are in display units: similarity or
    probability thresholds ("same" when score >= t) or, for ``l2``/``l2sq``,
    distance thresholds ("same" when distance <= t).
    """
    ps = score_pairs(model, source, pairs, **kwargs)
    m = verification_metrics(ps.labels, ps.scores, ps.folds, far_targets=far_targets)
    # Distances: turn score thresholds back into distance thresholds.
    for key in ("best_threshold", "eer_threshold"):
        m[key] = ps.to_display(m[key])
    if "fold_thresholds" in m:
        m["fold_thresholds"] = [ps.to_display(t) for t in m["fold_thresholds"]]
    for v in m["tar_at_far"].values():
        v["threshold"] = ps.to_display(v["threshold"])
    if ps.kind == "verifier":
        from kerasface.evaluation.metrics import accuracy_at

        m["accuracy_at_0.5"] = accuracy_at(ps.labels, ps.scores, 0.5)
    m["threshold_rule"] = ("same when distance <= threshold" if ps.score_name in ("l2", "l2sq")
                           else "same when score >= threshold")
    out = {"model_kind": ps.kind, "score": ps.score_name, **ps.settings, "pairs_accounting": ps.accounting, **m}
    return VerificationResult(ps, out)


def heldout_accuracy(ps: PairScores, subfolds: int = 10) -> dict:
    """Accuracy with thresholds never tuned on the pairs they classify.

    With several folds (``pairs.txt`` folds held out together) the folds
    themselves are used; a single fold is split into ``subfolds`` sub-folds
    (every ``subfolds``-th matched and mismatched pair) and each is classified
    with the threshold best on the others. Returns ``heldout_accuracy_mean``,
    ``_std``, ``_folds`` and ``_protocol`` (empty when there are too few pairs).
    """
    labels = np.asarray(ps.labels)
    folds = np.asarray(ps.folds)
    how = "the held-out folds (threshold chosen on the other folds)"
    if len(np.unique(folds)) < 2:
        sub = np.empty(len(folds), dtype=np.int64)
        for cls in (True, False):
            idx = np.flatnonzero(labels == cls)
            sub[idx] = np.arange(len(idx)) % subfolds
        folds = sub
        how = f"{subfolds} sub-folds of the evaluation pairs (threshold chosen on the other {subfolds - 1})"
    kf = kfold_accuracy(labels, ps.scores, folds)
    if kf is None:
        return {}
    return {"heldout_accuracy_mean": kf.mean, "heldout_accuracy_std": kf.std, "heldout_accuracy_folds": len(kf.folds),
            "heldout_accuracy_protocol": how}


def format_metrics(m: dict) -> str:
    """A small text table of the headline numbers."""
    acc = m["pairs_accounting"]
    lines = [f"pairs evaluated: {acc['evaluated']} of {acc['requested']}"
             + (f" ({acc['missing_pairs']} missing, {acc['corrupt_pairs']} corrupt)"
                if acc["missing_pairs"] or acc["corrupt_pairs"] else ""),
             f"score: {m.get('score_description', m['score'])} ({m['model_kind']} model){', flip TTA' if m.get('flip') else ''}"]
    rows = []
    if m.get("folds", 1) > 1:
        rows.append((f"accuracy ({m['folds']}-fold)", f"{100 * m['accuracy_mean']:.2f} +- {100 * m['accuracy_std']:.2f} %"))
    rows.append(("accuracy at best threshold", f"{100 * m['best_threshold_accuracy']:.2f} % (threshold {m['best_threshold']:.4f}; tuned on these pairs)"))
    if "accuracy_at_0.5" in m:
        rows.append(("accuracy at p(same) >= 0.5", f"{100 * m['accuracy_at_0.5']:.2f} %"))
    rows.append(("ROC AUC", "n/a (one class)" if m["auc"] is None else f"{m['auc']:.4f}"))
    rows.append(("EER", "n/a (one class)" if m["eer_percent"] is None else f"{m['eer_percent']:.2f} % (threshold {m['eer_threshold']:.4f})"))
    for far, t in m["tar_at_far"].items():
        rows.append((f"TAR @ FAR={far}", f"{100 * t['tar']:.2f} %" if t["reachable"] else t["note"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(lines + [f"  {k:<{w}}  {v}" for k, v in rows])


def write_report(result: VerificationResult, out_dir, source=None, n_cases: int = 6, title: str = "", metrics_file: str | None = "metrics.json") -> dict:
    """Write ``metrics.json``, ``roc.png`` and ``cases.png`` (hardest false accepts / rejects) to ``out_dir``.

    ``cases.png`` needs ``source`` to read the faces; it is skipped without it.
    ``metrics_file=None`` leaves the metrics to the caller (a training run
    folder embeds them in its own ``metrics.json``). Returns the paths written.
    """
    from kerasface.evaluation.plots import plot_case_pairs, plot_roc
    from kerasface.io import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ps, m = result.scores, result.metrics
    paths = {"roc": out / "roc.png"}
    plot_roc(ps.labels, ps.scores, paths["roc"], metrics=m, title=title)
    if source is not None and n_cases > 0:
        paths["cases"] = out / "cases.png"
        plot_case_pairs(ps, open_image_source(source), paths["cases"], threshold=m["best_threshold"], n=n_cases,
                        size=m.get("image_size") or 112, center_crop=m.get("center_crop", 1.0))
    if metrics_file:
        paths["metrics"] = out / metrics_file
    m["files"] = {k: v.name for k, v in paths.items()}
    if metrics_file:
        write_json(paths["metrics"], m)
    return {k: str(v) for k, v in paths.items()}


def hardest_cases(ps: PairScores, threshold_display: float, n: int) -> tuple[list, list]:
    """``(false_accepts, false_rejects)``: up to ``n`` mismatched pairs with the highest scores and
    ``n`` matched pairs with the lowest, each ``(pair, display score, is_error)``."""
    neg = np.nonzero(~ps.labels)[0]
    pos = np.nonzero(ps.labels)[0]
    fa = neg[np.argsort(-ps.scores[neg], kind="mergesort")[:n]]
    fr = pos[np.argsort(ps.scores[pos], kind="mergesort")[:n]]
    t = -threshold_display if ps.score_name in ("l2", "l2sq") else threshold_display
    return ([(ps.pairs[i], ps.to_display(float(ps.scores[i])), bool(ps.scores[i] >= t)) for i in fa],
            [(ps.pairs[i], ps.to_display(float(ps.scores[i])), bool(ps.scores[i] < t)) for i in fr])


def evaluate_to_dir(model, source, pairs, out_dir, *, n_cases: int = 6, title: str = "", **kwargs) -> VerificationResult:
    """:func:`evaluate_pairs` then :func:`write_report` (file names land in ``metrics['files']``)."""
    result = evaluate_pairs(model, source, pairs, **kwargs)
    write_report(result, out_dir, source=source, n_cases=n_cases, title=title)
    return result
