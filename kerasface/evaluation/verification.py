"""Pair verification for every kind of kerasface model: score the pairs, compute the metrics, write the report.

Each kind of model (:mod:`kerasface.evaluation.kinds`) has its own scoring path:

* an **embedding model** (one input), :func:`score_embedding_pairs`: both faces
  are embedded (optionally with flip TTA) and compared by cosine similarity, L2
  distance or squared L2 distance of the L2-normalised embeddings;
* a **triplet graph** (three inputs, report 004): its shared embedding model
  goes through :func:`score_embedding_pairs`;
* a **Siamese verifier** (two inputs, ``[different, same]`` softmax, report
  000), :func:`score_verifier_pairs`: the score is its "same" probability
  (averaged with the mirrored pair under flip TTA).

:func:`score_pairs` picks the path from ``kind=`` or the model's signature
(:func:`~kerasface.evaluation.kinds.model_kind`). Settings are one
:class:`~kerasface.evaluation.settings.EvalSettings` (or its fields as keywords)
and the image source is opened once, by the public entry point, and passed down.

Pairs come as a list of pairs or a pairs file: an LFW list (``pairs.txt``) or a CSV of
labelled image paths (:mod:`kerasface.data.pair_csv`), whose paths are relative to the
image source given, or to the CSV's own folder when the source is ``None``.
:func:`write_scores` writes every evaluated pair's score to a CSV.

Pairs whose images are missing from the source are counted and listed and
left out; pairs touching an undecodable image too. The metrics say over how
many pairs they were computed (``pairs.evaluated``).
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kerasface.data.images import CorruptImageError, read_face
from kerasface.data.lfw import Pair, resolve_pairs
from kerasface.data.pair_csv import PathPair, is_pairs_csv, read_pairs_list
from kerasface.data.pairs import stable_image_id
from kerasface.data.sources import ImageSource, open_image_source
from kerasface.evaluation.embeddings import embed_views, extract_embeddings, prepare_batch
from kerasface.evaluation.kinds import embedding_submodel, model_image_size, model_kind, verifier_head
from kerasface.evaluation.metrics import accuracy_at, kfold_accuracy, verification_metrics
from kerasface.evaluation.plots import plot_case_pairs, plot_roc
from kerasface.evaluation.settings import METRICS, EvalSettings
from kerasface.io import atomic_path, write_json

__all__ = [
    "METRICS",
    "EvalSettings",
    "PairScores",
    "default_pairs_file",
    "VerificationResult",
    "evaluate_pairs",
    "evaluate_to_dir",
    "format_metrics",
    "heldout_accuracy",
    "pairs_and_images",
    "score_embedding_pairs",
    "score_pairs",
    "score_verifier_pairs",
    "write_report",
    "write_scores",
]

logger = logging.getLogger("kerasface.evaluation")

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


def pairs_and_images(pairs, source=None) -> tuple[list[Pair] | list[PathPair], object]:
    """``(pairs, image root)``: the pairs of a list of pairs or of a pairs file (read once, its format decided
    once: a CSV of labelled paths or an LFW list), and where their images are: ``source`` when given, else
    the folder of a pairs CSV (whose paths are relative to it). ``ValueError`` when neither says.

    The public entry points call it first and pass the list down, so a pairs file is sniffed and read once.
    """
    if pairs is None:
        raise ValueError("no pairs given: pass a pairs list (LFW pairs.txt or a CSV of img1,img2,label)")
    is_file = isinstance(pairs, (str, os.PathLike))
    is_csv = is_file and is_pairs_csv(pairs)
    if source is None:
        if not is_csv:
            raise ValueError("no image source given: pass the images' folder or zip (only a pairs CSV "
                             "finds its images next to itself)")
        source = Path(pairs).parent
    return (read_pairs_list(pairs, is_csv=is_csv) if is_file else list(pairs)), source


def score_pairs(model: keras.Model, source=None, pairs=None, *, kind: str | None = None,
                settings: EvalSettings | None = None, **setting_kwargs) -> PairScores:
    """Score every pair of ``pairs`` (a list of :class:`Pair` / :class:`PathPair`, or a pairs file:
    LFW list or CSV) with ``model``, reading the images from ``source`` (:func:`pairs_and_images`).

    ``kind``: ``"embedding"``, ``"verifier"`` or ``"triplet"`` (default: from the model's signature,
    :func:`~kerasface.evaluation.kinds.model_kind`); ``settings``: an
    :class:`~kerasface.evaluation.settings.EvalSettings`, or its fields as keywords (``metric``,
    ``flip``, ``image_size``, ``center_crop``, ``normalization``, ``low_light_seed``, ``batch_size``,
    ``on_missing``, ``verbose``).
    """
    settings = EvalSettings.of(settings, **setting_kwargs)
    pairs, source = pairs_and_images(pairs, source)
    source = open_image_source(source)
    kind = model_kind(model, kind)
    if kind == "verifier":
        return score_verifier_pairs(model, source, pairs, settings)
    ps = score_embedding_pairs(embedding_submodel(model), source, pairs, settings)
    ps.kind = kind
    return ps


def score_embedding_pairs(model: keras.Model, source, pairs, settings: EvalSettings | None = None) -> PairScores:
    """Embedding model (one input): the ``settings.metric`` of the two faces' L2-normalised embeddings."""
    settings = settings or EvalSettings()
    pairs, source = pairs_and_images(pairs, source)
    source = open_image_source(source)
    requested, kept, missing_names = _resolve(source, pairs, settings)
    emb = extract_embeddings(model, source, [r for p in kept for r in (p.path1, p.path2)], settings=settings)
    row = emb.index()
    i1 = np.array([row[p.path1] for p in kept])
    i2 = np.array([row[p.path2] for p in kept])
    a, b = emb.vectors[i1], emb.vectors[i2]
    if settings.metric == "cosine":
        scores = np.sum(a * b, axis=1)
    else:
        d2 = np.sum((a - b) ** 2, axis=1)
        scores = -(np.sqrt(d2) if settings.metric == "l2" else d2)
    report = dict(
        settings.report(),
        image_size=model_image_size(model, settings.image_size),
        embedding_dim=int(emb.vectors.shape[1]),
        score_description=METRICS[settings.metric],
        flip_note=("flip TTA: embeddings of the image and of its mirror summed, then L2-normalised"
                   if settings.flip else "no flip TTA; embeddings L2-normalised"),
    )
    return _pair_scores(source, requested, kept, missing_names, scores, emb.ok[i1] & emb.ok[i2],
                        _failed(emb.relpaths, emb.ok), "embedding", settings.metric, report)


def score_verifier_pairs(model: keras.Model, source, pairs, settings: EvalSettings | None = None) -> PairScores:
    """Siamese verifier (two inputs -> ``[p(different), p(same)]``): its "same" probability.

    A :func:`~kerasface.models.SiameseVerifier` embeds each distinct image once and runs its head
    (:func:`~kerasface.evaluation.kinds.verifier_head`) on the pairs; any other two-input model gets
    both faces of every pair.
    """
    settings = settings or EvalSettings()
    pairs, source = pairs_and_images(pairs, source)
    source = open_image_source(source)
    requested, kept, missing_names = _resolve(source, pairs, settings)
    head = verifier_head(model)
    if head is not None:
        scores, ok, undecodable = _verifier_head_scores(embedding_submodel(model), head, source, kept, settings)
    else:
        scores, ok, undecodable = _verifier_pairwise_scores(model, source, kept, settings)
    report = dict(settings.report(), image_size=model_image_size(model, settings.image_size), score_description=(
        "Siamese verifier 'same' probability" + (", averaged with the mirrored pair" if settings.flip else "")))
    return _pair_scores(source, requested, kept, missing_names, scores, ok, undecodable, "verifier", "same_prob",
                        report)


def _resolve(source: ImageSource, pairs: list, settings: EvalSettings) -> tuple[list, list, list]:
    """``(requested, kept, missing image names)``: the pairs whose two images are in ``source``."""
    requested = list(pairs)
    kept, missing = resolve_pairs(requested, source, on_missing=settings.on_missing)
    if not kept:
        raise ValueError(f"none of the {len(requested)} pairs has both images in {source!r}")
    return requested, kept, list(dict.fromkeys(r for _, r in missing))


def _failed(relpaths, ok) -> list[str]:
    """The images of ``relpaths`` that did not decode (``ok[i]`` False), as their one decode found them."""
    return [r for r, good in zip(relpaths, ok) if not good]


def _pair_scores(source, requested, kept, missing_names, scores, ok, undecodable, kind, score_name,
                 report) -> PairScores:
    """The scores of the pairs whose images decoded, with the accounting of what was left out
    (``undecodable``: the images whose decoding failed, not their good partners)."""
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
        "corrupt_names": undecodable[:_N_NAMES],
        "source": repr(source),
    }
    return PairScores(scores=scores, labels=np.array([p.same for p in good], bool),
                      folds=np.array([p.fold for p in good], int), pairs=good, kind=kind,
                      score_name=score_name, accounting=accounting, settings=report)


def _verifier_head_scores(backbone, head, source: ImageSource, pairs, settings: EvalSettings):
    """Each distinct image through the backbone once, then the head on the pairs of embeddings."""
    unique, views, ok_img = embed_views(backbone, source, [r for p in pairs for r in (p.path1, p.path2)], settings)
    row = {r: i for i, r in enumerate(unique)}
    i1 = np.array([row[p.path1] for p in pairs])
    i2 = np.array([row[p.path2] for p in pairs])
    dtype = head.inputs[0].dtype
    scores = [np.asarray(head.predict([v[i1].astype(dtype), v[i2].astype(dtype)], batch_size=1024, verbose=0),
                         np.float64)[:, 1] for v in views]
    return sum(scores) / len(scores), ok_img[i1] & ok_img[i2], _failed(unique, ok_img)


def _verifier_pairwise_scores(model, source: ImageSource, pairs, settings: EvalSettings):
    """Any two-input model: both faces of every pair through the whole model."""
    size = model_image_size(model, settings.image_size)
    unique = list(dict.fromkeys(r for p in pairs for r in (p.path1, p.path2)))
    images = np.zeros((len(unique), size, size, 3), np.uint8)
    ok_img = np.ones(len(unique), bool)
    for i, rel in enumerate(unique):  # decoded as every face of an evaluation is (read_face)
        try:
            images[i] = read_face(source, rel, size, settings.center_crop)
        except CorruptImageError as e:
            logger.warning("skipping %s", e)
            ok_img[i] = False
    row = {r: i for i, r in enumerate(unique)}
    index = np.array([[row[p.path1], row[p.path2]] for p in pairs], np.int32)
    cache = tf.constant(images)
    ids = tf.constant([stable_image_id(r) for r in unique], tf.int64)

    def run(flipped: bool) -> np.ndarray:
        def load(idx):
            return tuple(prepare_batch(tf.gather(cache, idx[:, k]), tf.gather(ids, idx[:, k]), settings, flipped)
                         for k in range(2)),

        ds = tf.data.Dataset.from_tensor_slices(index).batch(settings.batch_size).map(load).prefetch(2)
        return np.asarray(model.predict(ds, verbose=settings.verbose), np.float64)[:, 1]

    scores = run(False)
    if settings.flip:
        scores = (scores + run(True)) / 2.0
    ok = ok_img[index[:, 0]] & ok_img[index[:, 1]]
    return scores, ok, _failed(unique, ok_img)


@dataclass
class VerificationResult:
    """Scores plus :func:`~kerasface.evaluation.metrics.verification_metrics` in display units."""

    scores: PairScores
    metrics: dict

    def summary(self) -> str:
        return format_metrics(self.metrics)


def evaluate_pairs(model, source=None, pairs=None, *, far_targets=(1e-3, 1e-2), **kwargs) -> VerificationResult:
    """Score ``pairs`` (:func:`score_pairs`, which takes ``kwargs``: ``kind``, ``settings`` or the
    settings as keywords) and compute every metric.

    ``pairs``: a list of pairs, an LFW pairs list, or a CSV of labelled image paths
    (``evaluate_pairs(model, pairs="pairs.csv")`` reads its images next to the CSV).

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
             f"score: {m.get('score_description', m['score'])} ({m['model_kind']} model)"
             f"{', flip TTA' if m.get('flip') else ''}"]
    rows = []
    if m.get("folds", 1) > 1:
        rows.append((f"accuracy ({m['folds']}-fold)",
                     f"{100 * m['accuracy_mean']:.2f} +- {100 * m['accuracy_std']:.2f} %"))
    rows.append(("accuracy at best threshold", f"{100 * m['best_threshold_accuracy']:.2f} % "
                 f"(threshold {m['best_threshold']:.4f}; tuned on these pairs)"))
    if "accuracy_at_0.5" in m:
        rows.append(("accuracy at p(same) >= 0.5", f"{100 * m['accuracy_at_0.5']:.2f} %"))
    rows.append(("ROC AUC", "n/a (one class)" if m["auc"] is None else f"{m['auc']:.4f}"))
    rows.append(("EER", "n/a (one class)" if m["eer_percent"] is None
                 else f"{m['eer_percent']:.2f} % (threshold {m['eer_threshold']:.4f})"))
    for far, t in m["tar_at_far"].items():
        rows.append((f"TAR @ FAR={far}", f"{100 * t['tar']:.2f} %" if t["reachable"] else t["note"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(lines + [f"  {k:<{w}}  {v}" for k, v in rows])


def write_report(result: VerificationResult, out_dir, source=None, n_cases: int = 6, title: str = "",
                 metrics_file: str | None = "metrics.json") -> dict:
    """Write ``metrics.json``, ``roc.png`` and ``cases.png`` (hardest false accepts / rejects) to ``out_dir``.

    ``cases.png`` needs ``source`` to read the faces; it is skipped without it.
    ``metrics_file=None`` leaves the metrics to the caller (a training run
    folder embeds them in its own ``metrics.json``). Returns the paths written.
    """
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


def evaluate_to_dir(model, source, pairs, out_dir, *, n_cases: int = 6, title: str = "", scores=None,
                    **kwargs) -> VerificationResult:
    """:func:`evaluate_pairs` then :func:`write_report` (file names land in ``metrics['files']``);
    the pairs are read and the image source opened once for both (``None``: a pairs CSV's folder,
    :func:`pairs_and_images`). ``scores``: also write every pair's score to this CSV (:func:`write_scores`)."""
    pairs, source = pairs_and_images(pairs, source)
    source = open_image_source(source)
    result = evaluate_pairs(model, source, pairs, **kwargs)
    if scores is not None:
        write_scores(result.scores, scores)
        result.metrics["scores_file"] = str(scores)
    write_report(result, out_dir, source=source, n_cases=n_cases, title=title)
    return result


def write_scores(scores: PairScores | VerificationResult, path) -> Path:
    """Every evaluated pair's score as a CSV, written atomically: ``img1,img2,label,score`` and ``fold``
    when the list has several folds (LFW ``pairs.txt``: 1 to 10; a CSV: its own numbers).

    ``label`` is 1 (same person) or 0; ``score`` is in the units of ``metrics.json``: a cosine
    similarity or a verifier's "same" probability (same when score >= threshold), or for the
    ``l2`` / ``l2sq`` metrics a distance (same when distance <= threshold). Pairs left out
    (missing or undecodable images) have no row; ``metrics.json``'s ``pairs_accounting`` lists them.
    """
    ps = scores.scores if isinstance(scores, VerificationResult) else scores
    path = Path(path)
    with_folds = len(np.unique(ps.folds)) > 1
    with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["img1", "img2", "label", "score"] + (["fold"] if with_folds else []))
        for p, label, s in zip(ps.pairs, ps.labels, ps.scores):
            w.writerow([p.path1, p.path2, int(label), repr(float(ps.to_display(s)))]
                       + ([p.fold_number] if with_folds else []))
    return path
