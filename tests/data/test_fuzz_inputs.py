"""Property-based probes (Hypothesis): random bytes and random lines never escape as a stray exception.

Every image decoder (``decode_image``: training, evaluation, packing; the aligner's decoder; the
``ImageDecoder`` that skips and counts) and the pairs-list parser are fed random input, and bytes that
start like each format the size check reads.  The outcome is always a result, a clear error
(``CorruptImageError`` / ``ValueError``, naming the input) or a counted skip.  The decompression limit
is lowered for these tests so that a random header can never make OpenCV allocate much.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kerasface.data import images as images_module
from kerasface.data.align import decode_for_alignment
from kerasface.data.images import CorruptImageError, ImageDecoder, decode_image, image_dimensions
from kerasface.data.lfw import parse_pairs

SIGNATURES = [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
              b"II+\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
              b"RIFF\x00\x00\x00\x00WEBPVP8X", b"P5\n", b"P6 ", b"P7\nWIDTH ", b"PF\n", b"\x59\xa6\x6a\x95",
              b"#?RADIANCE\n"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

image_bytes = st.one_of(st.binary(max_size=300),
                        st.tuples(st.sampled_from(SIGNATURES), st.binary(max_size=300)).map(lambda t: t[0] + t[1]))


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(images_module, "MAX_PIXELS", 250_000)


@FAST
@given(data=image_bytes)
def test_every_decoder_gives_an_image_or_a_corrupt_image_error(small_limit, data):
    dims = image_dimensions(data)  # never raises
    assert dims is None or (isinstance(dims[0], str) and dims[1] >= 0 and dims[2] >= 0)
    for decode in (decode_image, lambda d, n: decode_for_alignment(d, n)[0]):
        try:
            img = decode(data, "fuzz.jpg")
        except CorruptImageError as e:
            assert "fuzz.jpg" in str(e)
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.lists(image_bytes, min_size=1, max_size=4))
def test_the_training_decoder_skips_and_counts(small_limit, tmp_path_factory, files):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "A").mkdir()
    rels = []
    for i, data in enumerate(files):
        (root / "A" / f"{i}.jpg").write_bytes(data)
        rels.append(f"A/{i}.jpg")
    with ImageDecoder(root, 16, num_workers=1) as decoder:
        images, ok = decoder.decode_paths(rels)
    assert images.shape == (len(rels), 16, 16, 3) and decoder.stats.corrupt == int((~ok).sum())
    assert not images[~ok].any()


@FAST
@given(lines=st.lists(st.text(max_size=40), max_size=12))
def test_the_pairs_parser_gives_pairs_or_a_value_error_on_random_lines(lines):
    try:
        pairs = parse_pairs(lines)
    except ValueError as e:
        assert "<lines>" in str(e)
    else:
        assert pairs and all(isinstance(p.idx1, int) and isinstance(p.same, bool) for p in pairs)


pair_line = st.one_of(
    st.tuples(st.from_regex(r"[A-Za-z_]{1,8}", fullmatch=True), st.integers(-2, 9999), st.integers(-2, 9999))
    .map(lambda t: f"{t[0]}\t{t[1]}\t{t[2]}"),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20))


@FAST
@given(header=st.sampled_from(["1\t2", "2 1", "1", "0", "x", "\ufeff1\t1", ""]), lines=st.lists(pair_line, max_size=6),
       raw=st.binary(max_size=40))
def test_the_pairs_parser_on_random_files(tmp_path_factory, header, lines, raw):
    path = tmp_path_factory.mktemp("pairs") / "pairs.txt"
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode("utf-8") + raw)
    try:
        parse_pairs(path)
    except ValueError as e:
        assert str(path) in str(e)


def test_pairs_lists_with_a_bom_or_in_latin_1(tmp_path):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf1\nAnn\t1\t2\nAnn\t1\tBob\t1\n")   # Notepad's UTF-8: accepted
    assert [p.same for p in parse_pairs(bom)] == [True, False]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("1\nJos\xe9\t1\t2\nAnn\t1\tBob\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt, line 2: not UTF-8 text \(byte 0xe9"):
        parse_pairs(latin)


def test_names_in_nfc_against_folders_in_nfd_are_said_so(sample_dir, tmp_path):
    import shutil
    import unicodedata

    from kerasface.data.lfw import resolve_pairs

    face = sorted((sample_dir / "lfw").glob("*/*.jpg"))[0]
    nfc, nfd = unicodedata.normalize("NFC", "José_Doe"), unicodedata.normalize("NFD", "José_Doe")
    assert nfc != nfd
    for i in (1, 2):
        (tmp_path / "lfw" / nfd).mkdir(parents=True, exist_ok=True)
        shutil.copy(face, tmp_path / "lfw" / nfd / f"{nfd}_000{i}.jpg")
    pairs = parse_pairs(["1", f"{nfc}\t1\t2", f"{nfc}\t1\t{nfc}\t2"])
    with pytest.raises(FileNotFoundError, match=r"exist spelled in Unicode NFD .*look the same but are different"):
        resolve_pairs(pairs, tmp_path, on_missing="error")
