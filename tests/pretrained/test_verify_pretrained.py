"""`kerasface verify` with its default model (the converted dlib ResNet) on known LFW pairs.

The bundled sample's ``pairsVal.txt`` lists matched and mismatched pairs; each command must answer
with the right exit status (0 same person, 1 different people) using the threshold shipped with the
model, and its JSON must say where that threshold came from.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from kerasface.cli import exit_codes
from kerasface.cli.main import main
from kerasface.data import parse_pairs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                                reason="face-recognition-models is not installed (pip install -e '.[pretrained]')")


def _pairs(sample_dir, n):
    pairs = parse_pairs(sample_dir / "pairsVal.txt")
    same = [p for p in pairs if p.same][:n]
    different = [p for p in pairs if not p.same][:n]
    assert len(same) == len(different) == n
    return same + different


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    home = tmp_path_factory.mktemp("kerasface_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("KERASFACE_HOME", str(home))
    yield home
    mp.undo()


def test_verify_answers_known_lfw_pairs_with_the_default_model(sample_dir, cache, capsys):
    lfw = sample_dir / "lfw"
    for pair in _pairs(sample_dir, 3):
        code = main(["verify", str(lfw / pair.path1), str(lfw / pair.path2), "--json"])
        out = json.loads(capsys.readouterr().out)
        assert code == (exit_codes.OK if pair.same else exit_codes.DIFFERENT_PEOPLE), (pair, out)
        assert out["same"] is pair.same
        assert out["metric"] == "l2" and out["distance"] == pytest.approx(out["score"])
        assert (out["distance"] <= out["threshold"]) is pair.same
        assert "LFW" in out["threshold_source"]
