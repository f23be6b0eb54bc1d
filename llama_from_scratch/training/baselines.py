"""N-gram baselines: what counting tokens alone achieves, in bits per byte on the validation split.

Both models are counted on the training split and scored on every validation token (the
bigram's first context is the last training token: the text that really precedes it).

* **Unigram, add-k**: `p(b) = (c(b) + k) / (n + k V)`, with `c(b)` the count of token `b` among
  the `n` training tokens and `V` the vocabulary size. `k = 0` is the maximum-likelihood
  estimate, whose validation loss is the cross-entropy of the validation tokens' frequencies
  against the training ones; any `k > 0` gives every id a non-zero probability.
* **Bigram, interpolated absolute discounting** (Ney, Essen and Kneser 1994; Kneser-Ney without
  its continuation counts): every seen pair gives up `D` of its count, and the mass given up is
  shared out by the add-k unigram:

      p(b | a) = max(c(a, b) - D, 0) / c(a)  +  D * t(a) / c(a) * p_unigram(b)

  with `c(a, b)` the count of the pair, `c(a)` the count of `a` as a context and `t(a)` the
  number of distinct tokens seen after `a`. It sums to 1 over `b`. A context never seen in
  training falls back to the unigram. `D = 0.75` is the usual choice; nothing is tuned on the
  validation split.

Pairs are kept sparse (sorted `a * V + b` keys), so LLaMA 2's 32,000-token vocabulary costs no
`V x V` table. Bits per byte = mean nats per token / ln 2 / UTF-8 bytes per token, the same
conversion as the model's (`loop.bits_per_byte`). Not handled: longer n-grams, and smoothing
chosen on held-out data.

Chapter: pretraining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from llama_from_scratch.training.loop import bits_per_byte


def _ids(tokens: Any, vocab_size: int, what: str) -> np.ndarray:
    ids = np.asarray(tokens).astype(np.int64).reshape(-1)
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be at least 1, got {vocab_size}")
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{what} holds ids from {ids.min()} to {ids.max()}, outside the vocabulary "
                         f"[0, {vocab_size}): is vocab_size the tokenizer's?")
    return ids


def unigram_probs(train: Any, vocab_size: int, k: float = 1.0) -> np.ndarray:
    """`(vocab_size,)` float64 add-k probabilities from the ids in `train` (any 1-D sequence)."""
    if not k >= 0:
        raise ValueError(f"k must be >= 0 (0: no smoothing), got {k}")
    ids = _ids(train, vocab_size, "the training tokens")
    if len(ids) == 0 and k == 0:
        raise ValueError("no training tokens and k = 0: every probability would be 0/0")
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)  # (vocab,)
    return (counts + k) / (len(ids) + k * vocab_size)


def _mean_nats(probs: np.ndarray, targets: np.ndarray, what: str) -> float:
    if len(targets) == 0:
        raise ValueError("the validation split holds no tokens to score")
    if (probs <= 0).any():
        first = int(targets[np.argmax(probs <= 0)])
        raise ValueError(f"{what} gives token {first} probability 0 (it never appears in training): "
                         "its loss is infinite; smooth with k > 0")
    return float(-np.log(probs).mean())


def unigram_nats(train: Any, val: Any, vocab_size: int, k: float = 1.0) -> float:
    """Mean negative log-likelihood (nats per token) of every id in `val` under the add-k unigram
    of `train`. ValueError when `k = 0` and a validation id never occurs in `train`."""
    probs = unigram_probs(train, vocab_size, k)
    targets = _ids(val, vocab_size, "the validation tokens")
    return _mean_nats(probs[targets], targets, f"the unigram with k = {k}")


@dataclass(frozen=True)
class BigramModel:
    """Interpolated absolute discounting (see the module docstring); build with `fit_bigram`."""

    vocab_size: int
    discount: float
    unigram: np.ndarray  # (vocab,) add-k probabilities
    pair_keys: np.ndarray  # (pairs,) sorted a * vocab + b of every distinct pair seen
    pair_counts: np.ndarray  # (pairs,) c(a, b)
    context_counts: np.ndarray  # (vocab,) c(a): times a is followed by a token
    context_types: np.ndarray  # (vocab,) t(a): distinct tokens seen after a

    def probs(self, previous: Any, following: Any) -> np.ndarray:
        """p(following[i] | previous[i]) for equal-length 1-D id arrays: `(n,)` float64,
        every entry > 0."""
        a = _ids(previous, self.vocab_size, "the contexts")
        b = _ids(following, self.vocab_size, "the predicted tokens")
        if a.shape != b.shape:
            raise ValueError(f"previous {a.shape} and following {b.shape} must have one shape")
        keys = a * self.vocab_size + b
        pair = np.zeros(len(keys))  # c(a, b): looked up in the sorted keys
        if len(self.pair_keys):
            at = np.searchsorted(self.pair_keys, keys).clip(max=len(self.pair_keys) - 1)
            seen = self.pair_keys[at] == keys
            pair[seen] = self.pair_counts[at[seen]]
        c_a = self.context_counts[a].astype(np.float64)
        shared = np.where(c_a > 0, self.discount * self.context_types[a] / np.maximum(c_a, 1),
                          1.0)
        own = np.where(c_a > 0, np.maximum(pair - self.discount, 0) / np.maximum(c_a, 1), 0.0)
        return own + shared * self.unigram[b]


def fit_bigram(train: Any, vocab_size: int, discount: float = 0.75, k: float = 1.0) -> BigramModel:
    """Count the pairs of consecutive ids in `train`. Needs `0 < discount <= 1` and `k > 0`, so
    that every pair, seen or not, gets a probability above 0."""
    if not 0 < discount <= 1:
        raise ValueError(f"discount must lie in (0, 1] (0.75 is usual), got {discount}")
    if not k > 0:
        raise ValueError(f"k must be > 0 for the bigram: an unseen pair falls back on the unigram, got {k}")
    ids = _ids(train, vocab_size, "the training tokens")
    keys, counts = np.unique(ids[:-1] * vocab_size + ids[1:], return_counts=True)  # sorted
    contexts = keys // vocab_size
    return BigramModel(vocab_size, float(discount), unigram_probs(ids, vocab_size, k), keys, counts,
                       np.bincount(ids[:-1], minlength=vocab_size),
                       np.bincount(contexts, minlength=vocab_size))


def bigram_nats(train: Any, val: Any, vocab_size: int, discount: float = 0.75, k: float = 1.0) -> float:
    """Mean negative log-likelihood (nats per token) of every id in `val`; the first one's context
    is the last id of `train`."""
    model = fit_bigram(train, vocab_size, discount, k)
    targets = _ids(val, vocab_size, "the validation tokens")
    if len(targets) == 0 or len(np.asarray(train)) == 0:
        raise ValueError("the bigram needs at least one training and one validation token")
    previous = np.concatenate([_ids(train, vocab_size, "the training tokens")[-1:], targets[:-1]])
    return _mean_nats(model.probs(previous, targets), targets, "the bigram")


def baseline_bits_per_byte(train: Any, val: Any, vocab_size: int, val_bytes_per_token: float,
                           k: float = 1.0, discount: float = 0.75) -> dict[str, float]:
    """`{"unigram", "bigram"}`: validation bits per byte of both baselines.

    `val_bytes_per_token`: UTF-8 bytes of text per validation token (a TokenFile's
    `bytes_per_token("val")`), so the numbers compare with the model's and across tokenizers.
    """
    if not (math.isfinite(val_bytes_per_token) and val_bytes_per_token > 0):
        raise ValueError(f"val_bytes_per_token must be a positive number, got {val_bytes_per_token}")
    return {"unigram": bits_per_byte(unigram_nats(train, val, vocab_size, k), val_bytes_per_token),
            "bigram": bits_per_byte(bigram_nats(train, val, vocab_size, discount, k), val_bytes_per_token)}
