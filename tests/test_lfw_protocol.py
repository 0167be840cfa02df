"""Report 000's protocol: how much of its validation list (pairsDevTest.txt) it trained on (pairs.txt).

docs/experiments/vargface.md quotes these counts; this test recounts them from the official lists,
so the doc cannot drift from the data.
"""

from kerasface.data import parse_pairs


def _key(p):
    return (p.name1, p.idx1, p.name2, p.idx2, p.same)


def test_pairsdevtest_overlaps_pairs_txt_as_the_doc_says(shared_lfw):
    train = parse_pairs(shared_lfw / "pairs.txt")
    val = parse_pairs(shared_lfw / "pairsDevTest.txt")
    assert (len(train), len(val)) == (6000, 1000)
    train_images = {q for p in train for q in (p.path1, p.path2)}
    train_people = {q for p in train for q in (p.name1, p.name2)}
    val_images = {q for p in val for q in (p.path1, p.path2)}
    val_people = {q for p in val for q in (p.name1, p.name2)}
    shared_pairs = {_key(p) for p in val} & {_key(p) for p in train}
    assert len(shared_pairs) == 233
    assert (len(val_images & train_images), len(val_images)) == (1130, 1549)
    assert (len(val_people & train_people), len(val_people)) == (776, 963)
