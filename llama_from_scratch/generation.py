"""Turning next-token logits into text: greedy decoding and sampling, with a KV cache.

Each step feeds only the tokens the model has not seen yet (with the KV cache) and
picks the next token from the last position's logits:

* greedy (temperature 0): the most likely token;
* temperature T > 0: sample from softmax(logits / T); T < 1 sharpens, T > 1 flattens;
* top-k: keep only the k most likely tokens;
* top-p (nucleus): keep the smallest set of most likely tokens whose probability adds up
  to p (Meta's `sample_top_p`).

Batched prompts of different lengths need no padding (Meta's generate does the same):
decoding starts at the shortest prompt's end, and a sequence whose prompt is longer
keeps its own prompt token at each position instead of the sampled one. Generation
stops at a stop token (not returned), after `max_new_tokens`, or at the context length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from llama_from_scratch.model import Transformer
from llama_from_scratch.softmax import softmax


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
    """Zero all but the smallest set of most likely tokens with total probability >= p; renormalise.

    probs: `(batch, vocab)`. A token is kept when the tokens more likely than it sum to
    at most p, so the most likely token is always kept.
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)  # (batch, vocab) each
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (batch, vocab): mass of more likely tokens
    sorted_probs = sorted_probs.masked_fill(before > p, 0.0)  # (batch, vocab)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)  # (batch, vocab), original order
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


@torch.inference_mode()
def generate_steps(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   temperature: float = 0.6, top_k: int | None = None, top_p: float = 0.9,
                   stop_ids: Iterable[int] = (), seed: int | None = 0,
                   use_cache: bool = True) -> Iterator[list[int | None]]:
    """Yield, per decoding step, each sequence's new token id (None once it has stopped
    or while it is still reading its prompt). Stop tokens are not yielded.

    `seed` seeds a private generator (None: the global one); `use_cache=False` recomputes
    the whole sequence every step (slow; for comparison only).
    """
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    limit = model.args.max_seq_len
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    longest = max(len(p) for p in prompts)
    if longest > limit:
        raise ValueError(f"a prompt has {longest} tokens, more than the context length of "
                         f"{limit} (max_seq_len); shorten it to at most {limit} tokens")
    stop = set(stop_ids)
    device = model.tok_embeddings.weight.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    batch = len(prompts)
    total = min(limit, longest + max_new_tokens)  # positions used, prompts included
    tokens = torch.zeros(batch, total, dtype=torch.long, device=device)  # (batch, total)
    is_prompt = torch.zeros(batch, total, dtype=torch.bool, device=device)  # (batch, total)
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = torch.tensor(p, dtype=torch.long)
        is_prompt[i, :len(p)] = True
    lengths = [len(p) for p in prompts]
    n_new = [0] * batch
    done = [False] * batch
    cache = model.new_cache(batch, total) if use_cache else None
    prev = 0
    for cur in range(min(lengths), total):
        if use_cache:
            new = tokens[:, prev:cur]  # (batch, cur - prev): what the cache has not seen yet
            logits = model(new, start_pos=prev, cache=cache, last_only=True)[:, -1]  # (batch, vocab)
        else:
            logits = model(tokens[:, :cur], last_only=True)[:, -1]  # (batch, vocab): everything again
        next_ids = sample_next(logits, temperature, top_k, top_p, generator)  # (batch,)
        next_ids = torch.where(is_prompt[:, cur], tokens[:, cur], next_ids)  # prompts win
        tokens[:, cur] = next_ids
        prev = cur
        step: list[int | None] = []
        for i, t in enumerate(next_ids.tolist()):
            if done[i] or cur < lengths[i]:
                step.append(None)
            elif t in stop or n_new[i] >= max_new_tokens:
                done[i] = True
                step.append(None)
            else:
                n_new[i] += 1
                step.append(t)
        yield step
        if all(done[i] or n_new[i] >= max_new_tokens for i in range(batch)):
            return


def generate(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float = 0.6, top_k: int | None = None, top_p: float = 0.9,
             stop_ids: Iterable[int] = (), seed: int | None = 0, use_cache: bool = True) -> list[list[int]]:
    """New token ids for each prompt (prompt and stop token excluded). See `generate_steps`."""
    out: list[list[int]] = [[] for _ in prompts]
    for step in generate_steps(model, prompts, max_new_tokens, temperature, top_k, top_p,
                               stop_ids, seed, use_cache):
        for i, t in enumerate(step):
            if t is not None:
                out[i].append(t)
    return out


def stream(model: Transformer, prompt: Sequence[int], max_new_tokens: int, **kwargs) -> Iterator[int]:
    """New token ids of one prompt, one at a time, as they are generated."""
    for (t,) in generate_steps(model, [prompt], max_new_tokens, **kwargs):
        if t is not None:
            yield t


def stream_text(ids: Iterable[int], decode: Callable[[list[int]], str]) -> Iterator[str]:
    """Text pieces whose concatenation equals `decode(all ids)`.

    Decoding token by token is wrong for SentencePiece: a leading space may depend on
    the context, and a multi-byte character may be split over byte tokens. So decode
    everything so far and emit what is new, holding back an unfinished character (shown
    as U+FFFD) until its remaining bytes arrive.
    """
    seen: list[int] = []
    emitted = ""
    for t in ids:
        seen.append(t)
        text = decode(seen)
        stable = text.rstrip("\ufffd")  # an unfinished UTF-8 sequence decodes to U+FFFD for now
        if stable.startswith(emitted) and len(stable) > len(emitted):
            yield stable[len(emitted):]
            emitted = stable
    text = decode(seen)
    if not text.startswith(emitted):  # never seen with SentencePiece; fail loudly, not silently
        raise RuntimeError(f"streamed text {emitted!r} is not a prefix of the full decode {text!r}")
    if len(text) > len(emitted):
        yield text[len(emitted):]
