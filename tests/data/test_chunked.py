"""IdentityIndex, ChunkedLoader, P x K batches and offline triplet selection on real LFW faces."""

from __future__ import annotations

import logging
import shutil
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from kerasface.data import (
    ChunkedLoader,
    CorruptImageError,
    IdentityIndex,
    ImageDecoder,
    apply_triplet_selector,
    decode_image,
    fold_identities,
    offline_triplet_dataset,
    parse_pairs,
    pk_batches,
    pk_plan,
)
from kerasface.data.images import crop_resize

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"  # as in tests/conftest.py
SHARED_LFW = SHARED / "lfw"
SIZE = 48  # small decoded faces keep the tests fast
TINY = SHARED / "lfw_tiny" / "images"


def _tree_counts(root: Path) -> dict[str, int]:
    return {d.name: sum(1 for f in d.iterdir() if f.suffix.lower() == ".jpg") for d in root.iterdir() if d.is_dir()}


def _decode(path: Path, size: int = SIZE) -> np.ndarray:
    return crop_resize(decode_image(path.read_bytes(), str(path)), size, 1.0)


@pytest.fixture(scope="module")
def sample_index(sample_dir) -> IdentityIndex:
    return IdentityIndex.open(sample_dir)


@pytest.fixture(scope="module")
def tiny_index() -> IdentityIndex:
    if not TINY.is_dir():
        pytest.skip(f"lfw_tiny not available at {TINY}")
    return IdentityIndex.open(TINY)


def _first_pass_selector(embeddings, labels):
    """A tiny selector: every (anchor, positive) of an identity with the nearest other-identity image as negative."""
    d = ((embeddings[:, None, :] - embeddings[None, :, :]) ** 2).sum(-1)
    out = []
    for a in range(len(labels)):
        other = np.flatnonzero(labels != labels[a])
        n = other[np.argmin(d[a, other])]
        out.extend((a, p, n) for p in np.flatnonzero(labels == labels[a]) if p != a)
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


# --------------------------------------------------------------------------- the index
def test_index_from_folder_matches_tree(sample_dir, sample_index):
    root = sample_dir / "lfw"
    counts = _tree_counts(root)
    idx = sample_index
    assert len(idx) == sum(counts.values()) == 410
    assert idx.num_identities == len(counts) == 276
    assert idx.names == sorted(counts)
    assert dict(zip(idx.names, idx.counts.tolist())) == counts
    assert np.all(np.diff(idx.labels) >= 0) and idx.labels.dtype == np.int32
    for k in (0, 100, 275):
        rows = idx.rows_of(k)
        assert {p.split("/")[0] for p in idx.paths(rows)} == {idx.names[k]}
    read = idx.reader()
    for i in (0, 207, 409):
        assert read(idx.path(i)) == (root / idx.path(i)).read_bytes()
    # compact: the paths' bytes, an int64 offset (N + 1) and an int32 label per image, int64 identity starts
    path_bytes = sum(len(p.encode()) for p in idx.paths(range(len(idx))))
    assert idx.nbytes <= path_bytes + 8 * (len(idx) + 1) + 4 * len(idx) + 8 * (idx.num_identities + 1)


def test_index_from_zip_equals_folder(sample_dir, sample_index, tmp_path):
    z = tmp_path / "lfw.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        for p in sorted((sample_dir / "lfw").glob("*/*.jpg")):
            f.write(p, f"lfw/{p.parent.name}/{p.name}")
    idx = IdentityIndex.open(z)
    assert idx.kind == "zip"
    assert idx.names == sample_index.names
    assert np.array_equal(idx.labels, sample_index.labels)
    assert idx.paths(range(len(idx))) == sample_index.paths(range(len(sample_index)))
    assert idx.reader()(idx.path(5)) == (sample_dir / "lfw" / idx.path(5)).read_bytes()
    idx.close()


def test_save_load_memory_mapped(sample_index, tmp_path):
    sample_index.save(tmp_path / "idx")
    back = IdentityIndex.load(tmp_path / "idx", mmap=True)
    assert isinstance(back.blob, np.memmap)
    assert back.names == sample_index.names and back.root == sample_index.root
    assert np.array_equal(back.labels, sample_index.labels) and np.array_equal(back.starts, sample_index.starts)
    assert back.paths([0, 409]) == sample_index.paths([0, 409])
    assert IdentityIndex.open(tmp_path / "idx").paths([3]) == sample_index.paths([3])


def test_filter_select_exclude(sample_index):
    counts = dict(zip(sample_index.names, sample_index.counts.tolist()))
    two = sample_index.filter(min_images=2)
    assert two.names == sorted(n for n, c in counts.items() if c >= 2)
    assert len(two) == sum(c for c in counts.values() if c >= 2)
    assert two.labels.max() == two.num_identities - 1  # renumbered 0..K-1
    for k in range(two.num_identities):  # rows still point at the right files
        assert {p.split("/")[0] for p in two.paths(two.rows_of(k))} == {two.names[k]}
    band = sample_index.filter(min_images=3, max_images=4)
    assert set(band.counts.tolist()) == {3, 4}
    names = ["Abdullah_Gul", "AJ_Cook", "Nobody_Here"]
    sel = sample_index.select(names)
    assert sel.names == ["AJ_Cook", "Abdullah_Gul"] and len(sel) == counts["AJ_Cook"] + counts["Abdullah_Gul"]
    with pytest.raises(KeyError, match="Nobody_Here"):
        sample_index.select(names, missing="error")
    rest = sample_index.exclude(names)
    assert rest.num_identities == 274 and not {"AJ_Cook", "Abdullah_Gul"} & set(rest.names)


def test_csv_file_list_forms(sample_dir, tmp_path):
    root = sample_dir / "lfw"
    rels = [f"{n}/{f.name}" for n in ("Abdullah_Gul", "AJ_Cook") for f in sorted((root / n).glob("*.jpg"))]
    lines = ["# a comment", "path,label", ""]
    lines += [f"{r},{r.split('/')[0]}" for r in rels[:-1]]
    lines += [rels[-1]]  # no label: the parent folder names the identity
    lines += ["odd,name/with,comma.jpg,Comma_Person"]  # the label is after the last separator
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    idx = IdentityIndex.from_csv(tmp_path / "list.csv", root=root)
    assert idx.names == ["AJ_Cook", "Abdullah_Gul", "Comma_Person"]
    assert sorted(idx.paths(range(len(idx)))) == sorted(rels + ["odd,name/with,comma.jpg"])
    assert idx.root == str(root)
    assert idx.reader()(rels[0]) == (root / rels[0]).read_bytes()
    # tab-separated, integer labels sorted numerically, no header
    (tmp_path / "list.tsv").write_text("a.jpg\t10\nb.jpg\t2\nc.jpg\t2\n")
    tsv = IdentityIndex.from_csv(tmp_path / "list.tsv", sep="\t")
    assert tsv.names == ["2", "10"] and tsv.paths(range(3)) == ["b.jpg", "c.jpg", "a.jpg"]
    assert tsv.root == str(tmp_path)
    (tmp_path / "bad.csv").write_text("x.jpg,A\nlonely.jpg\n")
    with pytest.raises(ValueError, match="line 2"):
        IdentityIndex.from_csv(tmp_path / "bad.csv")


def test_large_csv_is_indexed_quickly_and_compactly(tmp_path):
    n, per = 200_000, 37
    path = tmp_path / "big.csv"
    with open(path, "w") as f:
        f.write("path,label\n")
        for i in range(n):
            k = (i * 7919) % (n // per)  # identities interleaved in the file: the index must group them
            f.write(f"faces/id{k:05d}/img_{i:07d}.jpg,person_{k:05d}\n")
    t0 = time.perf_counter()
    idx = IdentityIndex.from_csv(path)
    seconds = time.perf_counter() - t0
    assert seconds < 10, f"indexing 200k rows took {seconds:.1f} s"
    assert len(idx) == n and idx.num_identities == n // per
    assert idx.counts.sum() == n and set(np.unique(idx.counts).tolist()) <= {per, per + 1}
    path_bytes = len("faces/id00000/img_0000000.jpg")
    assert idx.nbytes < n * (path_bytes + 16)  # no per-entry Python objects
    assert isinstance(idx.blob, np.ndarray) and idx.blob.dtype == np.uint8
    rng = np.random.default_rng(0)
    for i in rng.integers(0, n, 50).tolist():
        p = idx.path(i)
        k = int(p.split("/")[1][2:])
        assert idx.names[idx.labels[i]] == f"person_{k:05d}"
        assert (int(p[-11:-4]) * 7919) % (n // per) == k
    loader = ChunkedLoader(idx, chunk_size=1000, images_per_identity=20)
    t0 = time.perf_counter()
    plan = loader.plan(0)
    assert time.perf_counter() - t0 < 10
    allrows = np.concatenate(plan)
    assert len(allrows) == n and len(np.unique(allrows)) == n
    assert max(len(c) for c in plan) <= 1000


# --------------------------------------------------------------------------- chunk plans
def _check_cover_plan(idx: IdentityIndex, plan, chunk_size: int, M: int):
    allrows = np.concatenate(plan)
    assert len(allrows) == len(idx) and np.array_equal(np.sort(allrows), np.arange(len(idx)))  # each image exactly once
    counts = idx.counts
    for rows in plan:
        assert 0 < len(rows) <= chunk_size
        per = Counter(idx.labels[rows].tolist())
        for k, c in per.items():
            assert c <= M
            g = -(-counts[k] // M)  # the identity's groups have near-equal sizes
            assert c in (counts[k] // g, -(-counts[k] // g))


def test_cover_plan_every_image_once_balanced_and_seeded(sample_index):
    loader = ChunkedLoader(sample_index, chunk_size=60, images_per_identity=3, seed=7, image_size=SIZE)
    p0, p1 = loader.plan(0), loader.plan(1)
    _check_cover_plan(sample_index, p0, 60, 3)
    _check_cover_plan(sample_index, p1, 60, 3)
    assert sum(len(r) == 60 for r in p0) >= len(p0) - 2  # chunks are filled, not fragmented
    again = ChunkedLoader(sample_index, chunk_size=60, images_per_identity=3, seed=7).plan(0)
    assert all(np.array_equal(a, b) for a, b in zip(p0, again)) and len(p0) == len(again)
    assert not np.array_equal(np.concatenate(p0), np.concatenate(p1))  # reshuffled across chunks each epoch
    assert {tuple(sorted(r)) for r in p0} != {tuple(sorted(r)) for r in p1}  # chunk membership changes too
    other = ChunkedLoader(sample_index, chunk_size=60, images_per_identity=3, seed=8).plan(0)
    assert not np.array_equal(np.concatenate(p0), np.concatenate(other))


def test_cover_plan_identity_cap(sample_index):
    idx = sample_index.filter(min_images=2)
    plan = ChunkedLoader(idx, chunk_size=100, images_per_identity=4, identities_per_chunk=10).plan(0)
    _check_cover_plan(idx, plan, 100, 4)
    assert max(len(np.unique(idx.labels[r])) for r in plan) == 10


def test_balanced_plan_n_identities_m_images(tiny_index):
    loader = ChunkedLoader(tiny_index, chunk_size=12, images_per_identity=4, mode="balanced", seed=3)
    assert loader.identities_per_chunk == 3
    seen = {k: [] for k in range(10)}
    for e in range(3):
        plan = loader.plan(e)
        assert [len(r) for r in plan] == [12, 12, 12, 4]
        labels = [tiny_index.labels[r] for r in plan]
        assert all(set(Counter(lab.tolist()).values()) == {4} for lab in labels)
        # every identity once
        assert sorted(np.concatenate([np.unique(lab) for lab in labels]).tolist()) == list(range(10))
        for rows in plan:
            for k in np.unique(tiny_index.labels[rows]).tolist():
                seen[k].extend(rows[tiny_index.labels[rows] == k].tolist())
    # the per-identity offset advances by M each epoch: 3 epochs x 4 >= 10 images, all used
    for k, rows in seen.items():
        assert set(rows) == set(tiny_index.rows_of(k).tolist())
    with pytest.raises(ValueError, match="exceeds chunk_size"):
        ChunkedLoader(tiny_index, chunk_size=12, images_per_identity=4, identities_per_chunk=4, mode="balanced")


def test_tiny_cover_counts_per_identity(tiny_index):
    plan = ChunkedLoader(tiny_index, chunk_size=25, images_per_identity=4, seed=0).plan(0)
    _check_cover_plan(tiny_index, plan, 25, 4)
    # 10 images with M=4 -> groups of 4, 3, 3 in three different chunks
    per_identity = Counter()
    for rows in plan:
        for k, c in Counter(tiny_index.labels[rows].tolist()).items():
            per_identity[(k, c)] += 1
    assert all(per_identity[(k, 4)] == 1 and per_identity[(k, 3)] == 2 for k in range(10))


# --------------------------------------------------------------------------- decoding
def test_epoch_decodes_the_planned_images(sample_dir, sample_index):
    loader = ChunkedLoader(sample_index, chunk_size=150, images_per_identity=5, image_size=SIZE, seed=1, num_workers=2)
    chunks = list(loader)
    plan = loader.plan(0)
    assert [c.number for c in chunks] == list(range(len(plan))) and all(c.epoch == 0 for c in chunks)
    for c, rows in zip(chunks, plan):
        assert c.images.shape == (len(rows), SIZE, SIZE, 3) and c.images.dtype == np.uint8
        assert np.array_equal(c.rows, rows) and np.array_equal(c.labels, sample_index.labels[rows])
        assert len(c) <= 150 and c.skipped == 0
    c = chunks[1]
    for j in (0, len(c) // 2, len(c) - 1):
        assert np.array_equal(c.images[j], _decode(sample_dir / "lfw" / sample_index.path(c.rows[j])))
    st = loader.stats
    assert (st["chunks"], st["images"], st["skipped"]) == (len(plan), 410, 0)
    assert next(iter(loader)).epoch == 1  # the next iteration is the next epoch


def test_prefetch_gives_the_same_chunks(sample_index):
    kw = dict(chunk_size=100, images_per_identity=3, image_size=32, seed=5, num_workers=2)
    with ChunkedLoader(sample_index, prefetch=0, **kw) as a, ChunkedLoader(sample_index, prefetch=2, **kw) as b:
        ca, cb = list(a.epoch(3)), list(b.epoch(3))
    assert len(ca) == len(cb) == len(a.plan(3))
    for x, y in zip(ca, cb):
        assert np.array_equal(x.rows, y.rows) and np.array_equal(x.images, y.images)


@pytest.fixture()
def broken_tree(sample_dir, tmp_path):
    root = tmp_path / "faces"
    names = ["Abdullah_Gul", "AJ_Cook", "Aaron_Peirsol"]
    for n in names:
        shutil.copytree(sample_dir / "lfw" / n, root / n)
    good = sorted((root / names[0]).glob("*.jpg"))[0].read_bytes()
    (root / "Broken_Person").mkdir()
    (root / "Broken_Person" / "Broken_Person_0001.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (root / "Broken_Person" / "Broken_Person_0002.jpg").write_bytes(b"")  # empty
    (root / names[1] / "AJ_Cook_0099.jpg").write_bytes(b"this is not a jpeg" * 10)  # garbage
    return root


def test_corrupt_images_are_skipped_and_counted(broken_tree, caplog):
    idx = IdentityIndex.open(broken_tree)
    loader = ChunkedLoader(idx, chunk_size=8, images_per_identity=4, image_size=SIZE, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="kerasface.data"):
        chunks = list(loader.epoch(0))
    planned = sum(len(r) for r in loader.plan(0))
    assert planned == len(idx)
    got = np.concatenate([c.rows for c in chunks])
    bad = {i for i in range(len(idx)) if idx.path(i).startswith("Broken_Person") or idx.path(i).endswith("_0099.jpg")}
    assert len(bad) == 3
    assert set(got.tolist()) == set(range(len(idx))) - bad
    assert sum(c.skipped for c in chunks) == 3
    assert all(len(c.images) == len(c.rows) == len(c.labels) for c in chunks)
    st = loader.stats
    assert (st["corrupt"], st["missing"], st["skipped"], st["images"]) == (3, 0, 3, len(idx) - 3)
    assert {Path(n).name for n in st["bad_names"]} == {"Broken_Person_0001.jpg", "Broken_Person_0002.jpg",
                                                        "AJ_Cook_0099.jpg"}
    assert "Broken_Person" in caplog.text
    # a missing file in a list is counted as missing
    (broken_tree / "list.csv").write_text("Abdullah_Gul/Abdullah_Gul_0013.jpg,A\nGone/Gone_0001.jpg,G\n")
    lst = ChunkedLoader(IdentityIndex.from_csv(broken_tree / "list.csv"), chunk_size=4, images_per_identity=2,
                        image_size=SIZE)
    (only,) = list(lst.epoch(0))
    assert len(only) == 1 and lst.stats["missing"] == 1
    strict = ChunkedLoader(idx.select(["Broken_Person"]), chunk_size=4, images_per_identity=2, on_error="raise",
                           prefetch=0)
    with pytest.raises(CorruptImageError, match="Broken_Person"):
        list(strict.epoch(0))


def test_image_decoder_reads_index_rows_and_source_paths_alike(broken_tree):
    idx = IdentityIndex.open(broken_tree)
    rows = np.arange(len(idx))
    paths = idx.paths(rows)
    with ImageDecoder(idx, SIZE, num_workers=2) as by_rows, ImageDecoder(broken_tree, SIZE) as by_paths:
        a, ok_a = by_rows.decode(rows)
        b, ok_b = by_paths.decode_paths(paths + ["Nobody/Nobody_0001.jpg"])
        assert by_paths.stats.as_dict()["missing"] == 1 and by_paths.stats.as_dict()["corrupt"] == 3
        with pytest.raises(TypeError, match="decode_paths"):
            by_paths.decode(rows)
    np.testing.assert_array_equal(a, b[:-1])
    assert ok_a.tolist() == ok_b[:-1].tolist() and not ok_b[-1] and not b[-1].any()
    good = int(np.flatnonzero(ok_a)[0])
    np.testing.assert_array_equal(a[good], _decode(broken_tree / paths[good]))
    with pytest.raises(FileNotFoundError, match="Nobody_0001.jpg"):
        ImageDecoder(broken_tree, SIZE, on_missing="raise").decode_paths(["Nobody/Nobody_0001.jpg"])
    with pytest.raises(ValueError, match="on_missing must be"):
        ImageDecoder(broken_tree, SIZE, on_missing="ignore")


# --------------------------------------------------------------------------- P x K
def _check_pk(batches, labels, P, K):
    for rows in batches:
        lab = np.asarray(labels)[rows].reshape(P, K)
        assert len(np.unique(lab[:, 0])) == P  # exactly P distinct identities
        assert np.all(lab == lab[:, :1])  # K images each, identity by identity


def test_pk_plan_semantics(sample_index, tiny_index):
    idx = sample_index
    counts = idx.counts
    P, K = 6, 3
    plan = pk_plan(idx, P, K, epoch=0, seed=2)
    assert plan.shape[1] == P * K and len(plan) > 10
    _check_pk(plan, idx.labels, P, K)
    used = set(idx.labels[plan.reshape(-1)].tolist())
    assert not any(counts[k] < 2 for k in used)  # min_images=2: singletons never appear
    # identities with >= K images never repeat an image inside their group; shorter ones are padded
    for rows in plan.reshape(-1, K):
        c = counts[idx.labels[rows[0]]]
        assert len(set(rows.tolist())) == min(c, K)
    assert any(counts[k] < K for k in used)
    skip = pk_plan(idx, P, K, epoch=0, seed=2, short="skip")
    _check_pk(skip, idx.labels, P, K)
    assert all(counts[k] >= K for k in idx.labels[skip.reshape(-1)].tolist())
    assert np.array_equal(pk_plan(idx, P, K, epoch=0, seed=2), plan)
    assert not np.array_equal(pk_plan(idx, P, K, epoch=1, seed=2)[:5], plan[:5])
    with pytest.raises(ValueError, match="short"):
        pk_plan(idx, P, K, short="pad")
    # few identities with many groups: every batch still has P distinct identities
    few = np.repeat([5, 9, 2], [40, 30, 12])
    crowded = pk_plan(few, 3, 2, seed=0)
    _check_pk(crowded, few, 3, 2)
    assert len(crowded) == 6  # identity 2 has 6 groups of 2: at most 6 full batches
    # 10 identities x 10 images, K=5 -> 20 groups -> 5 batches of 4: every image exactly once
    tiny = pk_plan(tiny_index, 4, 5, seed=0)
    assert tiny.shape == (5, 20)
    assert np.array_equal(np.sort(tiny.reshape(-1)), np.arange(100))
    _check_pk(tiny, tiny_index.labels, 4, 5)


def test_pk_batches_from_chunk_and_streaming(sample_dir, sample_index):
    idx = sample_index.filter(min_images=2)
    chunk = ChunkedLoader(idx, chunk_size=400, images_per_identity=10, image_size=SIZE).load(np.arange(len(idx)))
    P, K = 4, 2
    ds = pk_batches(chunk, P, K, seed=3, dtype="uint8")
    first = list(ds.as_numpy_iterator())
    plan = pk_plan(chunk.labels, P, K, epoch=0, seed=3)
    assert len(first) == len(plan)
    for (x, y), rows in zip(first, plan):
        assert x.shape == (P * K, SIZE, SIZE, 3) and x.dtype == np.uint8 and y.dtype == np.int32
        assert np.array_equal(x, chunk.images[rows]) and np.array_equal(y, chunk.labels[rows])
    _check_pk(np.arange(P * K)[None], first[0][1], P, K)
    second = list(ds.as_numpy_iterator())  # next pass = next epoch, different batches
    assert not np.array_equal(first[0][1], second[0][1])
    again = list(pk_batches(chunk, P, K, seed=3, dtype="uint8").as_numpy_iterator())
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again))
    xf, yf = next(iter(pk_batches((chunk.images, chunk.labels), P, K, seed=3)))
    assert xf.dtype.name == "float32" and float(xf.numpy().min()) >= -1.0 and float(xf.numpy().max()) < 1.0
    assert np.allclose(xf.numpy(), (first[0][0].astype(np.float32) - 127.5) / 128.0)
    # streaming from the index: the same plan, images decoded per batch
    stream = pk_batches(idx, P, K, seed=3, dtype="uint8", image_size=SIZE)
    (xs, ys), = list(stream.take(1).as_numpy_iterator())
    rows0 = pk_plan(idx, P, K, epoch=0, seed=3)[0]
    assert np.array_equal(ys, idx.labels[rows0])
    assert np.array_equal(xs[3], _decode(sample_dir / "lfw" / idx.path(rows0[3])))


# --------------------------------------------------------------------------- offline triplets
def test_offline_triplet_dataset(sample_index):
    import keras

    idx = sample_index.filter(min_images=3)
    loader = ChunkedLoader(idx, chunk_size=60, images_per_identity=4, image_size=32, seed=0)
    chunk = next(iter(loader))
    assert 50 <= len(chunk) <= 60
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8)])
    ds, triplets = offline_triplet_dataset(chunk, lambda x: model(x, training=False), _first_pass_selector,
                                           batch_size=16, embed_batch_size=7, return_triplets=True, seed=1)
    lab = chunk.labels
    norm = (chunk.images.astype(np.float32) - 127.5) / 128.0
    embeddings_before = model(norm, training=False).numpy()
    n_pos = sum(c * (c - 1) for c in Counter(lab.tolist()).values())
    assert triplets.shape == (n_pos, 3)
    assert np.all(lab[triplets[:, 0]] == lab[triplets[:, 1]]) and np.all(lab[triplets[:, 0]] != lab[triplets[:, 2]])
    batches = list(ds.as_numpy_iterator())
    assert sum(len(y) for _, y in batches) == n_pos and batches[0][1].shape == (16, 2, 1) and not batches[0][1].any()
    # the images are the chunk's rows named by the (shuffled) triplets
    (a, p, n), _ = batches[0]
    flat = norm.reshape(len(norm), -1)
    ia = [int(np.flatnonzero((flat == im.reshape(-1)).all(1))[0]) for im in a]
    ip = [int(np.flatnonzero((flat == im.reshape(-1)).all(1))[0]) for im in p]
    inn = [int(np.flatnonzero((flat == im.reshape(-1)).all(1))[0]) for im in n]
    assert all(lab[x] == lab[y] != lab[z] for x, y, z in zip(ia, ip, inn))
    assert int(ds.cardinality()) == len(batches) == -(-n_pos // 16)
    # ready for a three-input triplet model whose output stacks (d_pos, d_neg) as (None, 2, 1)
    ins = [keras.Input((32, 32, 3)) for _ in range(3)]
    ea, ep, en = (model(x) for x in ins)
    dist = [keras.ops.sqrt(keras.ops.maximum(keras.ops.sum(keras.ops.square(ea - e), -1, keepdims=True), 1e-12))
            for e in (ep, en)]
    triplet_model = keras.Model(ins, keras.ops.stack(dist, axis=1))
    triplet_model.compile("sgd", loss=lambda y, d: keras.ops.mean(keras.ops.maximum(d[:, 0] - d[:, 1] + 0.2, 0.0)))
    history = triplet_model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    # the selector saw the model's embeddings (as they were before the fit)
    emb = embeddings_before
    assert np.array_equal(triplets, _first_pass_selector(emb, lab))
    # a broken selector is caught
    with pytest.raises(ValueError, match="negative"):
        apply_triplet_selector(emb, lab,
                               lambda e, labels: np.array([[0, int(np.flatnonzero(labels == labels[0])[1]), 0]]))
    with pytest.raises(ValueError, match="shape"):
        apply_triplet_selector(emb, lab, lambda e, labels: np.array([0, 1, 2]))


# --------------------------------------------------------------------------- fold hold-out
def test_fold_identities_hold_out(sample_dir, sample_index, tmp_path):
    train_names = fold_identities(sample_dir / "pairsTrain.txt")
    val_names = fold_identities(sample_dir / "pairsVal.txt")
    pairs = parse_pairs(sample_dir / "pairsTrain.txt")
    assert set(train_names) == {n for p in pairs for n in (p.name1, p.name2)}
    assert not set(train_names) & set(val_names)  # the sample's lists name different people
    # a two-fold list where one person is in both folds: excluding fold 1 removes them from fold 0's people
    a, b, c, d, person = sample_index.names[:5]
    lines = ["2\t1", f"{a}\t1\t2", f"{person}\t1\t{b}\t1", f"{c}\t1\t2", f"{person}\t2\t{d}\t1"]
    assert fold_identities(lines, [0]) == sorted([a, b, person])
    assert fold_identities(lines) == sorted([a, b, c, d, person])
    held = fold_identities(lines, [0], exclude_folds=[1])
    assert held == sorted([a, b])
    train_index = sample_index.select(held)
    assert train_index.names == held and not set(train_index.names) & set(fold_identities(lines, [1]))


def test_fold_identities_official_pairs():
    if not (SHARED_LFW / "pairs.txt").is_file():
        pytest.skip(f"pairs.txt not available at {SHARED_LFW}")
    pairs = parse_pairs(SHARED_LFW / "pairs.txt")
    test_people = set(fold_identities(pairs, [9]))
    train_people = fold_identities(pairs, range(9), exclude_folds=[9])
    assert len(test_people) > 100 and len(train_people) > 1000
    assert not test_people & set(train_people)
    assert set(train_people) | test_people >= {p.name1 for p in pairs if p.fold == 0}
    if (SHARED_LFW / "lfw.zip").is_file():
        idx = IdentityIndex.open(SHARED_LFW / "lfw.zip")
        assert (len(idx), idx.num_identities) == (13233, 5749)
        train = idx.select(train_people, missing="error")
        assert train.num_identities == len(train_people) and not test_people & set(train.names)
        idx.close()
