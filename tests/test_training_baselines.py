"""The n-gram baselines of chapter 8: checked by hand on tiny corpora, against a plain-Python
count on real text, and on tinyshakespeare, where a bigram must beat a unigram."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.load import load_tokenizer
from llama_from_scratch.tokenizer.sentencepiece_model import write_model
from llama_from_scratch.tokenizer.sentencepiece_trainer import train as train_bpe
from llama_from_scratch.training.baselines import (baseline_bits_per_byte, bigram_nats, fit_bigram, unigram_nats,
                                                   unigram_probs)
from llama_from_scratch.training.data import tokenize_file


def test_unigram_bits_per_byte_is_the_entropy_by_hand():
    """One token per byte, the same text to count and to score, no smoothing: the entropy of
    "abracadabra"'s letters, a 5, b 2, r 2, c 1, d 1 out of 11."""
    ids = np.frombuffer(b"abracadabra", dtype=np.uint8)
    by_hand = -(5 / 11 * math.log2(5 / 11) + 2 * (2 / 11) * math.log2(2 / 11) + 2 * (1 / 11) * math.log2(1 / 11))
    assert by_hand == pytest.approx(2.0404, abs=1e-4)
    assert unigram_nats(ids, ids, 256, k=0) / math.log(2) == pytest.approx(by_hand, rel=1e-12)
    # Two bytes per token: the same nats spread over twice the text.
    bits = baseline_bits_per_byte(ids, ids, 256, val_bytes_per_token=2.0)["unigram"]
    assert bits != pytest.approx(by_hand / 2)  # k = 1 by default: smoothing costs something
    assert unigram_nats(ids, ids, 256, k=1.0) / math.log(2) / 2 == pytest.approx(bits, rel=1e-12)


def test_add_k_unigram_by_hand():
    """train [0, 0, 1], vocabulary 3, k = 1: (2 + 1, 1 + 1, 0 + 1) / (3 + 3)."""
    np.testing.assert_allclose(unigram_probs([0, 0, 1], 3, k=1.0), [3 / 6, 2 / 6, 1 / 6], rtol=1e-15)
    assert unigram_nats([0, 0, 1], [2, 0], 3, k=1.0) == pytest.approx(-(math.log(1 / 6) + math.log(1 / 2)) / 2)


def test_bigram_probabilities_by_hand_and_they_sum_to_one():
    """train 0 1 0 1 0 2, D = 0.5, k = 1: c(0) = 3 with c(0,1) = 2, c(0,2) = 1, t(0) = 2;
    unigram (4, 3, 2) / 9. Token 2 is never a context: its row is the unigram."""
    model = fit_bigram([0, 1, 0, 1, 0, 2], 3, discount=0.5, k=1.0)
    uni = np.array([4, 3, 2]) / 9
    expected = {(0, 0): 0.5 * 2 / 3 * uni[0],
                (0, 1): (2 - 0.5) / 3 + 0.5 * 2 / 3 * uni[1],
                (0, 2): (1 - 0.5) / 3 + 0.5 * 2 / 3 * uni[2],
                (1, 0): (2 - 0.5) / 2 + 0.5 * 1 / 2 * uni[0],
                (1, 1): 0.5 * 1 / 2 * uni[1],
                (2, 1): uni[1]}
    pairs = np.array(list(expected))
    np.testing.assert_allclose(model.probs(pairs[:, 0], pairs[:, 1]), list(expected.values()), rtol=1e-14)
    every = np.arange(3)
    for context in range(3):
        assert model.probs(np.full(3, context), every).sum() == pytest.approx(1.0, abs=1e-14)


def test_smoothing_gives_finite_values_for_unseen_pairs_and_tokens():
    train = [1, 2, 1, 2, 1, 3]
    model = fit_bigram(train, 6)
    # (2, 3): unseen pair of a seen context; (5, 1): unseen context; (1, 4): a token never seen at all.
    probs = model.probs([2, 5, 1, 0], [3, 1, 4, 0])
    assert np.isfinite(probs).all() and (probs > 0).all()
    assert math.isfinite(bigram_nats(train, [3, 1, 4, 0, 5, 5], 6))
    assert math.isfinite(unigram_nats(train, [4, 5, 0], 6, k=0.5))
    with pytest.raises(ValueError, match="token 4 probability 0.*k > 0"):
        unigram_nats(train, [1, 4], 6, k=0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 3\)"):
        unigram_probs([0, 5], 3)
    with pytest.raises(ValueError, match="discount"):
        fit_bigram([0, 1], 3, discount=0.0)
    with pytest.raises(ValueError, match="k must be > 0"):
        fit_bigram([0, 1], 3, k=0)
    with pytest.raises(ValueError, match="val_bytes_per_token"):
        baseline_bits_per_byte([0, 1], [1], 3, val_bytes_per_token=0.0)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    """tinyshakespeare in a 512-piece BPE trained on its first 90%: (TokenFile, vocab size)."""
    folder = tmp_path_factory.mktemp("shakespeare")
    text = datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")
    write_model(train_bpe(text[: len(text) * 9 // 10], 512), folder / "tokenizer.model")
    tokenizer = load_tokenizer(folder / "tokenizer.model")
    return tokenize_file(datafiles.path("tinyshakespeare.txt"), tokenizer, folder / "cache"), tokenizer.vocab_size


def test_bigram_is_below_unigram_on_shakespeare(shakespeare):
    tokens, vocab = shakespeare
    bits = baseline_bits_per_byte(tokens.train, tokens.val, vocab, tokens.bytes_per_token("val"))
    # Measured: unigram 4.10, bigram 2.86 bits per byte. A character-level unigram would be about 4.8.
    assert 3.5 < bits["unigram"] < 4.6, bits
    assert bits["bigram"] < bits["unigram"] - 0.8, bits


def test_counts_agree_with_plain_python_on_real_tokens(shakespeare):
    """The numpy counting (bincount, sorted pair keys, searchsorted) against dicts and a loop."""
    tokens, vocab = shakespeare
    train, val = [int(t) for t in tokens.train[:30_000]], [int(t) for t in tokens.val[:3_000]]
    k, discount = 0.5, 0.75
    unigram = Counter(train)
    p_uni = {b: (unigram[b] + k) / (len(train) + k * vocab) for b in range(vocab)}
    pairs = Counter(zip(train[:-1], train[1:]))
    contexts = Counter(train[:-1])
    followers = Counter(a for a, _ in pairs)
    nats = 0.0
    for a, b in zip([train[-1]] + val[:-1], val):
        if contexts[a] == 0:
            p = p_uni[b]
        else:
            p = max(pairs[a, b] - discount, 0) / contexts[a] + discount * followers[a] / contexts[a] * p_uni[b]
        nats -= math.log(p)
    assert bigram_nats(train, val, vocab, discount, k) == pytest.approx(nats / len(val), rel=1e-12)
    by_loop = -sum(math.log(p_uni[b]) for b in val) / len(val)
    assert unigram_nats(train, val, vocab, k) == pytest.approx(by_loop, rel=1e-12)
