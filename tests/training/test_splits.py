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
