"""Choosing the next token from next-token logits: greedy, temperature, top-k, top-p.

* greedy (temperature 0): the most likely token;
* temperature T > 0: sample from softmax(logits / T); T < 1 sharpens, T > 1 flattens;
* top-k: keep only the k most likely tokens;
* top-p (nucleus): keep the smallest set of most likely tokens whose probability adds up
  to p (Meta's `sample_top_p`).

Chapter: sampling.
"""

from __future__ import annotations

import torch

from llama_from_scratch.model.softmax import softmax


def check_sampling(temperature: float, top_k: int | None, top_p: float) -> None:
    """Raise ValueError, saying which value is wrong, for an impossible sampling setting."""
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None to keep every token), got {top_k}")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Set all but the k largest logits of each row to -inf. logits: `(batch, vocab)`."""
    k = min(k, logits.shape[-1])
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (batch, 1): the k-th largest
    return logits.masked_fill(logits < kth, float("-inf"))  # (batch, vocab)


def top_p_filter(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Zero all but the smallest set of most likely tokens of total probability >= p; rescale.

    probs: `(batch, vocab)`. A token is kept when the tokens more likely than it sum to
    at most p, so the most likely token is always kept.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (batch, vocab) each
    # (batch, vocab): the mass of the tokens more likely than each one
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(before > p, 0.0)  # (batch, vocab)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)  # (batch, vocab) unsorted
    return kept / kept.sum(dim=-1, keepdim=True)  # (batch, vocab)


def sample_next(logits: torch.Tensor, temperature: float = 0.6, top_k: int | None = None,
                top_p: float = 0.9, generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids `(batch,)` from last-position logits `(batch, vocab)`."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)  # (batch,): greedy
    logits = logits.float() / temperature  # (batch, vocab)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)  # (batch, vocab)
    probs = softmax(logits, dim=-1)  # (batch, vocab)
    if top_p < 1:
        probs = top_p_filter(probs, top_p)  # (batch, vocab)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (batch,)
