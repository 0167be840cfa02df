"""InsightFace .bin loading: the real file loads; a pickle that would run code is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kerasface.data.insightface_bin import BinSource, UnsafePickleError, bin_pairs, load_bin, load_bin_bytes

SMALL_LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "insightface_bin" / "small_lfw.bin"


def test_real_small_lfw_bin_loads():
    if not SMALL_LFW.is_file():
        pytest.skip(f"{SMALL_LFW} not available")
    images, issame = load_bin(SMALL_LFW)
    assert len(images) == 20 and issame.dtype == bool and issame.shape == (10,) and issame.all()
    assert all(im.shape == (112, 112, 3) and im.dtype == np.uint8 for im in images)
    # Same bytes as numpy's own (unrestricted) unpickling of this trusted file.
    with open(SMALL_LFW, "rb") as f:
        bins, _ = pickle.load(f, encoding="bytes")
    raw, _ = load_bin(SMALL_LFW, decode=False)
    assert raw == [b.tobytes() for b in bins]
    src = BinSource(SMALL_LFW)
    pairs = bin_pairs(src)
    assert len(pairs) == 10 and all(src.exists(p.path1) and src.exists(p.path2) for p in pairs)
    assert sorted({p.fold for p in pairs}) == list(range(10))


def test_bytes_items_and_numpy_uint8_arrays_both_load():
    jpg = b"\xff\xd8fake"
    assert load_bin_bytes(pickle.dumps(([jpg, jpg], [False])))[0] == [jpg, jpg]
    arr = np.frombuffer(jpg, dtype=np.uint8).copy()
    images, issame = load_bin_bytes(pickle.dumps(([arr, jpg], [True]), protocol=3))
    assert images == [jpg, jpg] and issame.tolist() == [True]


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(([_RunsCode(marker), b"x"], [True]))
    bad = tmp_path / "evil.bin"
    bad.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"refused to load (posix|os|nt)\.system"):
        load_bin(bad)
    assert not marker.exists()
    # The same payload with plain pickle would have run the command (proves the test payload is real).
    pickle.loads(payload)
    assert marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(([np.zeros(4, np.float32)], [])),           # non-uint8 array -> numpy.dtype('f4') refused
    pickle.dumps(([np.zeros((2, 2), np.uint8), b"a"], [True])),  # 2 x 2 array
    pickle.dumps(([b"a", b"b"], [1])),                        # issame not bool
    pickle.dumps(([b"a"], [True])),                           # count mismatch
    pickle.dumps({"a": 1}),                                   # wrong shape
    b"\x80\x03garbage",                                       # truncated
])
def test_malformed_bins_raise_clear_errors(payload):
    with pytest.raises((UnsafePickleError, ValueError), match=r"<bytes>|restricted|InsightFace"):
        load_bin_bytes(payload)


def test_builtins_eval_refused():
    # Hand-written protocol-0 pickle: GLOBAL builtins.eval, REDUCE
    payload = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_bin_bytes(payload)


def test_bin_pairs_evaluate_like_an_lfw_list():
    if not SMALL_LFW.is_file():
        pytest.skip(f"{SMALL_LFW} not available")
    from kerasface.evaluation.baselines import BASELINES
    from kerasface.evaluation.verification import evaluate_pairs

    src = BinSource(SMALL_LFW)
    m = evaluate_pairs(BASELINES["raw-pixels"](64), src, bin_pairs(src), verbose=0).metrics
    acc = m["pairs_accounting"]
    assert acc["requested"] == acc["evaluated"] == 10 and acc["corrupt_pairs"] == acc["missing_pairs"] == 0
    assert m["folds"] == 10
