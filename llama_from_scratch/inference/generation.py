"""Turning a model into text: the decoding loop with a KV cache, batched and streamed.

Each step feeds only the tokens the model has not seen yet (with the KV cache) and
picks the next token from the last position's logits with `sampling.sample_next`.

Batched prompts of different lengths need no padding (Meta's generate does the same):
decoding starts at the shortest prompt's end, and a sequence whose prompt is longer
keeps its own prompt token at each position instead of the sampled one. Generation
stops at a stop token (not returned), after `max_new_tokens`, or at the context length.

Chapter: sampling.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch

from llama_from_scratch.inference.sampling import check_sampling, sample_next
from llama_from_scratch.model.transformer import Transformer


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
        if hasattr(model, "agree_on"):  # tensor parallel: every rank feeds the token rank 0 chose
            next_ids = model.agree_on(next_ids)
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
    """New token ids of one prompt, one at a time, as they are generated (text pieces from them:
    `Tokenizer.stream_text`)."""
    for (t,) in generate_steps(model, [prompt], max_new_tokens, **kwargs):
        if t is not None:
            yield t

