"""kerasface.data.splits: the one rule that finds a pairs list, and the identity split built on it."""

from __future__ import annotations

import pytest

from kerasface.data.splits import (
    EVALUATION_LISTS,
    HELDOUT_LISTS,
    find_pairs_list,
    resolve_identity_split,
    resolve_pair_lists,
)
from kerasface.evaluation.verification import default_pairs_file


def _lists(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text("1\n")
    return folder


def test_a_named_list_is_taken_as_given_first_then_next_to_the_data(tmp_path, monkeypatch):
    data = _lists(tmp_path / "data", "mine.txt")
    assert find_pairs_list(data, "mine.txt") == data / "mine.txt"
    monkeypatch.chdir(_lists(tmp_path / "cwd", "mine.txt"))
    assert find_pairs_list(data, "mine.txt").resolve() == (tmp_path / "cwd" / "mine.txt")  # as given wins
    with pytest.raises(FileNotFoundError, match=r"evaluation pairs list 'nope.txt' not found \(looked as given"):
        find_pairs_list(data, "nope.txt", what="evaluation pairs list")
    assert find_pairs_list(data, "nope.txt", required=False) is None


def test_defaults_are_looked_for_next_to_a_folder_or_beside_a_zip_in_their_order(tmp_path):
    data = _lists(tmp_path / "lfw", "pairsVal.txt", "pairsDevTest.txt")
    zip_file = tmp_path / "lfw" / "lfw.zip"
    zip_file.write_bytes(b"")
    assert find_pairs_list(data, defaults=HELDOUT_LISTS) == data / "pairsDevTest.txt"
    assert find_pairs_list(zip_file, defaults=HELDOUT_LISTS) == data / "pairsDevTest.txt"
    assert find_pairs_list(data, defaults=("pairs.txt",), required=False) is None
    with pytest.raises(FileNotFoundError, match="no pairs.txt in"):
        find_pairs_list(data, defaults=("pairs.txt",))


@pytest.mark.parametrize("present", [("pairs.txt", "pairsVal.txt"), ("pairsDevTest.txt", "pairsVal.txt"),
                                     ("pairsVal.txt",), ()])
def test_evaluate_default_list_is_find_pairs_list_over_evaluation_lists(tmp_path, present):
    """``kerasface evaluate``'s default_pairs_file(data) == find_pairs_list(data, defaults=EVALUATION_LISTS)."""
    data = _lists(tmp_path / "d", *present)
    if not present:
        with pytest.raises(FileNotFoundError):
            default_pairs_file(data)
        with pytest.raises(FileNotFoundError):
            find_pairs_list(data, defaults=EVALUATION_LISTS)
        return
    assert default_pairs_file(data) == find_pairs_list(data, defaults=EVALUATION_LISTS) == data / present[0]


def test_pair_verifier_lists_follow_the_same_rule(tmp_path):
    data = _lists(tmp_path / "d", "pairsTrain.txt", "pairsVal.txt")
    assert resolve_pair_lists(data, None, None) == (data / "pairsTrain.txt", data / "pairsVal.txt")
    _lists(data, "pairs.txt", "pairsDevTest.txt")  # the report's couple comes first
    assert resolve_pair_lists(data, None, None) == (data / "pairs.txt", data / "pairsDevTest.txt")
    assert resolve_pair_lists(data, None, "pairsVal.txt") == (data / "pairs.txt", data / "pairsVal.txt")
    with pytest.raises(FileNotFoundError, match="pairs list 'nope.txt' not found"):
        resolve_pair_lists(data, "nope.txt", None)


def test_identity_split_evaluates_on_the_heldout_list_next_to_the_data(sample_dir):
    settings = type("S", (), dict(pairs=None, eval_pairs=None, holdout_folds=(10,), train_folds=None,
                                  min_images=2))()
    split = resolve_identity_split(settings, sample_dir)
    assert split.eval_source == str(sample_dir / "pairsVal.txt") and split.folds_file is None
    assert not split.excluded & set(split.train.names) and split.train.num_identities >= 2


# --------------------------------------------------------------------------- pair trainer's held-out folds
def test_pair_folds_split_lfw_into_person_disjoint_train_and_heldout(shared_lfw):
    from kerasface.data import parse_pairs
    from kerasface.data.splits import split_pair_folds

    pairs = parse_pairs(shared_lfw / "pairs.txt")
    train, held = split_pair_folds(pairs, (10,), "pairs.txt")
    assert (len(train), len(held)) == (5400, 600)
    assert {p.fold for p in held} == {9} and 9 not in {p.fold for p in train}
    people = lambda ps: {n for p in ps for n in (p.name1, p.name2)}  # noqa: E731
    assert not people(train) & people(held)  # LFW's folds are person-disjoint


def test_pair_folds_refuse_missing_folds_a_single_fold_list_and_holding_out_everything():
    from kerasface.data.lfw import Pair
    from kerasface.data.splits import split_pair_folds

    two = [Pair("a", 1, "a", 2, True, fold=0), Pair("b", 1, "c", 1, False, fold=1)]
    train, held = split_pair_folds(two, (2,), "x.txt")
    assert [p.name1 for p in train] == ["a"] and [p.name1 for p in held] == ["b"]
    with pytest.raises(ValueError, match=r"fold\(s\) \[3\] do not exist"):
        split_pair_folds(two, (3,), "x.txt")
    with pytest.raises(ValueError, match="nothing left to train"):
        split_pair_folds(two, (1, 2), "x.txt")
    with pytest.raises(ValueError, match="needs a folds list"):
        split_pair_folds(two[:1], (1,), "x.txt")


def test_pair_trainer_holdout_folds_read_one_folds_list_and_refuse_eval_pairs(tmp_path):
    from kerasface.presets import get_pair_preset
    from kerasface.training.tasks.pairs import PairTask

    (tmp_path / "pairs.txt").write_text("2\t1\na\t1\t2\nb\t1\tc\t1\n")
    (tmp_path / "pairsDevTest.txt").write_text("1\na\t1\t2\n")
    cfg = get_pair_preset("vargface").override(data=str(tmp_path), holdout_folds=(2,))
    settings = PairTask(cfg).settings()
    assert settings["train_pairs"] == settings["eval_pairs"] == str(tmp_path / "pairs.txt")
    assert tuple(settings["holdout_folds"]) == (2,)
    with pytest.raises(ValueError, match="cannot be combined with --eval-pairs"):
        PairTask(cfg.override(eval_pairs="pairsDevTest.txt")).settings()
