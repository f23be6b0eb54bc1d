"""Byte-level BPE: the readable trainer and the fast trainer agree, and encode/decode round-trip."""

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer import bpe_basic, bpe_fast


@pytest.fixture(scope="module")
def shakespeare():
    return datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")


def test_merges_by_hand():
    # "aaabdaaabac": aa occurs 4 times -> 256; then ab (97,98) and (256,97) both occur twice, the
    # smaller pair wins -> 257; then (256,257) twice -> 258; then all pairs once: (97,99) is smallest.
    expected = [(97, 97), (97, 98), (256, 257), (97, 99)]
    assert bpe_basic.train("aaabdaaabac", 260) == expected
    assert bpe_fast.train("aaabdaaabac", 260) == expected
    assert bpe_basic.encode("aaabdaaabac", expected) == [258, 100, 258, 259]


def test_readable_and_fast_give_identical_merges_on_a_slice(shakespeare):
    text = shakespeare[:12_000]
    assert bpe_basic.train(text, 256 + 120) == bpe_fast.train(text, 256 + 120)


def test_fast_trains_on_all_of_shakespeare_and_round_trips(shakespeare):
    merges = bpe_fast.train(shakespeare, 1024)
    assert len(merges) == 768
    # The first merge is the most frequent pair within chunks, counted here independently.
    pairs = Counter()
    for chunk in bpe_basic.pre_split(shakespeare):
        b = chunk.encode("utf-8")
        pairs.update(zip(b, b[1:]))
    assert merges[0] == max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))
    sample = shakespeare[-5_000:]
    ids = bpe_basic.encode(sample, merges)
    assert bpe_basic.decode(ids, merges) == sample
    assert len(ids) < len(sample.encode("utf-8")) / 2  # it compresses
    part = shakespeare[:100_000]
    assert bpe_fast.encode(part, merges) == bpe_basic.encode(part, merges)  # the cache changes nothing


def test_stops_when_no_pairs_are_left():
    assert bpe_basic.train("ab ab", 300) == bpe_fast.train("ab ab", 300) == [(97, 98), (32, 256)]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_pre_split_covers_every_character(text):
    assert "".join(bpe_basic.pre_split(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab c\n1é", max_size=80))
def test_trainers_agree_on_random_small_texts(text):
    assert bpe_basic.train(text, 280) == bpe_fast.train(text, 280)


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least 256"):
        bpe_fast.train("x", 100)
    with pytest.raises(ValueError, match="out of range"):
        bpe_basic.decode([300], [])
