"""Identity splits: every hold-out, fold and pairs-list rule of the trainers, in one place.

* :func:`find_pairs_list`: where a pairs list is, named or by default. One rule for
  every caller: a name the user typed is looked for as given (relative to the
  working folder), then next to the data (the folder, or the folder holding a
  zip); with no name, the first of a tuple of default names next to the data.
  The defaults of each use are the constants below:

  - :data:`TRAIN_VAL_LISTS`: the pair verifier's train + validation lists;
  - :data:`FOLDS_LIST`: the LFW folds list (``pairs.txt``, View 2);
  - :data:`HELDOUT_LISTS`: evaluation lists without folds;
  - :data:`EVALUATION_LISTS`: what ``kerasface evaluate`` scores by default
    (``kerasface.evaluation.verification.default_pairs_file(data)`` is
    ``find_pairs_list(data, defaults=EVALUATION_LISTS)``).

* :func:`resolve_pair_lists`: the train and validation lists of the pair verifier.
* :func:`resolve_identity_split`: who trains and which pairs evaluate the
  embedding trainers (triplet and classification): the people of the evaluation
  pairs are never trained on. :class:`IdentitySplit` holds the answer.
* :func:`split_heldout`: a seeded fraction of every training identity's images
  held out (classification accuracy on known identities).
* :func:`write_pairs_list`: a pairs list written back in the LFW format.

This module sits on the data floor: NumPy and ``kerasface.data`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasface.data.identities import IdentityIndex, fold_identities
from kerasface.data.lfw import parse_pairs
from kerasface.io import atomic_path

logger = logging.getLogger("kerasface.data")

__all__ = ["TRAIN_VAL_LISTS", "FOLDS_LIST", "HELDOUT_LISTS", "EVALUATION_LISTS", "list_folders", "find_pairs_list",
           "split_pair_folds", "resolve_pair_lists", "IdentitySplit", "resolve_identity_split", "split_heldout",
           "write_pairs_list"]

#: train + validation lists of the pair verifier: the report's protocol, then the bundled sample's
TRAIN_VAL_LISTS = (("pairs.txt", "pairsDevTest.txt"), ("pairsTrain.txt", "pairsVal.txt"))
#: the LFW folds list (View 2: 10 folds)
FOLDS_LIST = "pairs.txt"
#: evaluation lists without folds: LFW's View 1 test list, then the bundled sample's
HELDOUT_LISTS = ("pairsDevTest.txt", "pairsVal.txt")
#: what an evaluation scores when no list is named
EVALUATION_LISTS = (FOLDS_LIST, *HELDOUT_LISTS)


def list_folders(data) -> list[Path]:
    """Where lists "next to the data" are: the data folder itself, or the folder holding a data file (zip)."""
    data = Path(data)
    return [data] if data.is_dir() else [data.parent]


def find_pairs_list(data, name: str | None = None, defaults: Sequence[str] = (), what: str = "pairs list",
                    required: bool = True) -> Path | None:
    """The pairs list called ``name`` (as given, else next to ``data``), or with no ``name`` the first of
    ``defaults`` next to ``data``. Not found: ``FileNotFoundError`` naming where it looked (``required``), else None;
    a folder where the list should be: ``IsADirectoryError`` saying so.
    """
    folders = list_folders(data)
    where = ", ".join(map(str, folders))
    if name:
        if Path(name).is_file():
            return Path(name)
        found = next((d / name for d in folders if (d / name).is_file()), None)
        if found is None:
            folder = next((p for p in (Path(name), *(d / name for d in folders)) if p.is_dir()), None)
            if folder is not None:
                raise IsADirectoryError(f"{what} {str(folder)!r} is a folder, not a pairs list file")
        if found is None and required:
            raise FileNotFoundError(f"{what} {name!r} not found (looked as given and in {where})")
        return found
    found = next((d / n for n in defaults for d in folders if (d / n).is_file()), None)
    if found is None and required:
        raise FileNotFoundError(f"no {', '.join(defaults)} in {where!r}; pass --pairs")
    return found


def resolve_pair_lists(data: Path, train_pairs: str | None, val_pairs: str | None) -> tuple[Path, Path]:
    """Find the train/validation pair lists: explicit paths, else next to ``data``.

    With no names given, ``pairs.txt`` + ``pairsDevTest.txt`` (the report's
    protocol) are looked for first, then the bundled sample's
    ``pairsTrain.txt`` + ``pairsVal.txt``. A single name given: the other one is
    the matching default (of the first default couple found whole).
    """
    def near_data(n: str) -> Path | None:
        return find_pairs_list(data, defaults=(n,), required=False)

    couple = next((c for c in TRAIN_VAL_LISTS if all(near_data(n) for n in c)), None)
    if not (train_pairs or val_pairs):
        if couple is None:
            raise FileNotFoundError(
                f"no pairs lists next to {data}: expected {' + '.join(TRAIN_VAL_LISTS[0])} or "
                f"{' + '.join(TRAIN_VAL_LISTS[1])}; pass --train-pairs and --val-pairs")
        return near_data(couple[0]), near_data(couple[1])
    couple = couple or TRAIN_VAL_LISTS[0]
    found = []
    for n, d in zip((train_pairs, val_pairs), couple):
        f = find_pairs_list(data, n, required=False) if n else near_data(d)
        if f is None:
            raise FileNotFoundError(f"pairs list {n or d!r} not found (looked as given and in "
                                    f"{', '.join(map(str, list_folders(data)))})")
        found.append(f)
    return found[0], found[1]


def split_pair_folds(pairs: Sequence, holdout_folds: Sequence[int], path) -> tuple[list, list]:
    """``(training pairs, held-out pairs)`` of a folds list: the pairs of ``holdout_folds`` (numbered
    1..n) are held out, every other fold trains. LFW's ``pairs.txt`` folds are person-disjoint, so no
    held-out person is seen in training; the pair trainer's ``--holdout-folds`` (an honest figure
    beside the report-000 protocol, whose validation list shares people with its training list)."""
    n_folds = 1 + max((p.fold for p in pairs), default=-1)
    if n_folds < 2:
        raise ValueError(f"--holdout-folds needs a folds list (such as LFW's pairs.txt); {path} has "
                         f"{max(n_folds, 0)} fold(s)")
    bad = sorted(f for f in holdout_folds if not 1 <= f <= n_folds)
    if bad:
        raise ValueError(f"held-out fold(s) {bad} do not exist: {path} has folds 1..{n_folds}")
    held = {f - 1 for f in holdout_folds}
    if len(held) == n_folds:
        raise ValueError(f"--holdout-folds holds out every fold of {path}: nothing left to train on")
    return [p for p in pairs if p.fold not in held], [p for p in pairs if p.fold in held]


# --------------------------------------------------------------------------- identity split
@dataclass
class IdentitySplit:
    """Who trains and what is evaluated: see :func:`resolve_identity_split`."""

    index: IdentityIndex  # every image of --data
    train: IdentityIndex  # the training identities (>= min_images images each)
    eval_pairs: list  # Pair objects (empty: no evaluation)
    eval_source: str  # where the evaluation pairs came from, in words
    excluded: set = field(default_factory=set)  # people of the evaluation pairs (not trained on)
    folds_file: Path | None = None
    report: dict = field(default_factory=dict)


def _evaluation_pairs(settings, data: Path, folds_file: Path | None, folds_pairs) -> tuple[list, str]:
    """Rules 1-4 of :func:`resolve_identity_split`: ``(pairs, where they came from)``."""
    n_folds = 1 + max(p.fold for p in folds_pairs) if folds_pairs else 0
    if settings.eval_pairs:
        path = find_pairs_list(data, settings.eval_pairs, what="evaluation pairs list")
        return parse_pairs(path), str(path)
    if n_folds > 1:
        bad = [f for f in settings.holdout_folds if f > n_folds]
        if bad:
            raise ValueError(f"held-out fold(s) {bad} do not exist: {folds_file} has folds 1..{n_folds}")
        held = {f - 1 for f in settings.holdout_folds}
        return ([p for p in folds_pairs if p.fold in held],
                f"{folds_file}, fold(s) {', '.join(map(str, settings.holdout_folds))}")
    found = find_pairs_list(data, defaults=HELDOUT_LISTS, required=False)
    if found is not None:
        return parse_pairs(found), str(found)
    logger.warning("no evaluation pairs next to %s (%s, %s): training on every identity, no verification",
                   data, FOLDS_LIST, ", ".join(HELDOUT_LISTS))
    return [], "none"


def resolve_identity_split(settings, data: Path) -> IdentitySplit:
    """The training index and the evaluation pairs of ``settings`` on ``data``.

    ``settings``: anything with ``pairs``, ``eval_pairs``, ``holdout_folds``,
    ``train_folds`` and ``min_images`` (a triplet or classification preset).
    Evaluation pairs, first rule that applies:

    1. ``settings.eval_pairs``: that list, whole;
    2. a folds list (``settings.pairs``, else ``pairs.txt`` next to the data) with
       more than one fold: the pairs of ``settings.holdout_folds`` (numbered 1..10);
    3. ``pairsDevTest.txt`` or the bundled sample's ``pairsVal.txt`` next to the data;
    4. none: the whole data set trains, no verification.

    Training identities: every identity of the data with at least
    ``settings.min_images`` images, minus every person named in the evaluation
    pairs (matched or mismatched); with ``settings.train_folds``, only the people
    named in those folds of the folds list.
    """
    index = IdentityIndex.open(data)
    if not len(index):
        raise ValueError(f"--data {data}: no images found")
    folds_file = find_pairs_list(data, settings.pairs, defaults=(FOLDS_LIST,), required=bool(settings.pairs))
    folds_pairs = parse_pairs(folds_file) if folds_file else None
    n_folds = 1 + max(p.fold for p in folds_pairs) if folds_pairs else 0
    eval_pairs, eval_source = _evaluation_pairs(settings, data, folds_file, folds_pairs)
    excluded = {n for p in eval_pairs for n in (p.name1, p.name2)}

    if settings.train_folds:
        if n_folds < 2:
            raise ValueError("--train-folds needs a folds list (pairs.txt next to the data, or --pairs)")
        bad = [f for f in settings.train_folds if f > n_folds]
        if bad:
            raise ValueError(f"training fold(s) {bad} do not exist: {folds_file} has folds 1..{n_folds}")
        names = set(fold_identities(folds_pairs, [f - 1 for f in settings.train_folds])) - excluded
        candidates = index.select(sorted(names))
    else:
        candidates = index.exclude(excluded)
    train = candidates.filter(min_images=settings.min_images)
    if train.num_identities < 2:
        raise ValueError(f"only {train.num_identities} training identit{'y' if train.num_identities == 1 else 'ies'} "
                         f"with >= {settings.min_images} images left after leaving out the {len(excluded)} people of "
                         f"the evaluation pairs ({eval_source}); a triplet needs two")
    report = _split_report(settings, data, index, train, eval_pairs, eval_source, excluded)
    return IdentitySplit(index, train, eval_pairs, eval_source, excluded, folds_file, report)


def _split_report(settings, data, index, train, eval_pairs, eval_source, excluded) -> dict:
    c = train.counts
    return {
        "data": str(data),
        "all": {"images": len(index), "identities": index.num_identities},
        "train": {"images": len(train), "identities": train.num_identities, "min_images": settings.min_images,
                  "images_per_identity": {"min": int(c.min()), "median": float(np.median(c)), "max": int(c.max())},
                  "folds": list(settings.train_folds) if settings.train_folds else None},
        "eval": {"source": eval_source, "pairs": len(eval_pairs), "matched": sum(p.same for p in eval_pairs),
                 "people": len(excluded),
                 "images": len({r for p in eval_pairs for r in (p.path1, p.path2)})},
        "people_left_out_of_training": len(excluded & set(index.names)),
    }


def split_heldout(labels: np.ndarray, fraction: float, min_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, val_rows)`` of an identity-grouped label array.

    Every identity with at least ``min_images`` images gives
    ``max(1, round(fraction * count))`` randomly chosen images (seeded) to
    validation; the others keep all their images for training. ``fraction=0``:
    no validation images.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 31]))
    train, val = [], []
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    for st, c in zip(starts.tolist(), counts.tolist()):
        rows = order[st:st + c]
        if fraction > 0 and c >= min_images:
            k = min(c - 1, max(1, int(round(fraction * c))))
            mask = np.zeros(c, bool)
            mask[rng.permutation(c)[:k]] = True
            val.append(rows[mask])
            train.append(rows[~mask])
        else:
            train.append(rows)
    return _sorted_rows(train), _sorted_rows(val)


def _sorted_rows(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def write_pairs_list(pairs: list, path) -> bool:
    """Write ``pairs`` in the official LFW format (``parse_pairs`` reads it back with the same folds).

    Folds keep their order; each fold must hold as many matched as mismatched
    pairs, and all folds the same number (the format's header). Returns False
    (and writes nothing) when the pairs do not fit the format.
    """
    folds = sorted({p.fold for p in pairs})
    per_fold = []
    for f in folds:
        m = [p for p in pairs if p.fold == f and p.same]
        d = [p for p in pairs if p.fold == f and not p.same]
        per_fold.append((m, d))
    sizes = {len(m) for m, _ in per_fold} | {len(d) for _, d in per_fold}
    if not pairs or len(sizes) != 1:
        return False
    n = sizes.pop()
    lines = [f"{len(folds)}\t{n}" if len(folds) > 1 else f"{n}"]
    for m, d in per_fold:
        lines += [f"{p.name1}\t{p.idx1}\t{p.idx2}" for p in m]
        lines += [f"{p.name1}\t{p.idx1}\t{p.name2}\t{p.idx2}" for p in d]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return True
