"""Answers as token ids, and their log-probabilities under a policy: what RLHF trains on.

    rollout     a prompt's ids, the answer's new ids (the stop token left out) and whether the
                answer ended with a stop token (EOS, or BOS for llama2.c's stories260K) or was
                cut at `max_new_tokens` or at the context's end
    actions     the answer's tokens, then, if it ended, one more action: STOP. Stopping is a
                single event whose probability is the sum over the stop ids (a story ended by
                EOS or by BOS is the same answer), so its log-probability is their logsumexp.
                A cut answer has no stop action: the cut was the sampler's, not the policy's.
    batch       `answer_batch` right-pads prompt + answer ids into one `(batch, seq)` tensor and
                says, per action t, which position predicts it: `index[b, t] = len(prompt) - 1 + t`

The answer's log-probability, log pi(y | x) = sum over actions of log pi(a_t | x, a_<t), is what
PPO's ratios, DPO's loss and the KL to the SFT model (kl.py) are made of. Sampling as in
measurement (sampler.py, temperature 1.0, top-p 1.0, 256 new tokens) unless told otherwise;
batch b of `sample_rollouts` is drawn with a generator seeded by `line_seed(seed, b)`.

Not handled: top-k or top-p below 1 in the log-probabilities (they are the policy's full
softmax at temperature 1, whatever temperature the answers were sampled at).

Chapter: rlhf.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from llama_from_scratch.alignment.instructions import prompt_ids
from llama_from_scratch.alignment.sampler import MAX_NEW_TOKENS, TEMPERATURE, line_seed
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer


@dataclass(frozen=True)
class Rollout:
    topic: str
    prompt: list[int]  # BOS first, as `align sample` feeds it
    ids: list[int]  # the answer's new ids, stop token excluded
    ended: bool  # True: a stop token followed `ids`; False: cut by the token budget or the context


class AnswerBatch(NamedTuple):
    tokens: torch.Tensor  # (batch, seq) int64: prompt + answer, right-padded
    index: torch.Tensor  # (batch, actions) int64: the position whose output predicts action t
    targets: torch.Tensor  # (batch, actions) int64: the answer's ids; 0 at STOP and padding
    stop: torch.Tensor  # (batch, actions) bool: action t is STOP
    mask: torch.Tensor  # (batch, actions) float32: 1 for a real action, 0 for padding


def rollout_of(topic: str, prompt: list[int], ids: Sequence[int], max_new_tokens: int, max_seq_len: int) -> Rollout:
    """The rollout of `generate`'s new ids for `prompt`: it ended (a stop token followed) when it
    stopped before both the token budget and the context's end."""
    ended = len(ids) < max_new_tokens and len(prompt) + len(ids) < max_seq_len
    return Rollout(topic, prompt, list(ids), ended)


def sample_rollouts(model: Transformer, tokenizer: Tokenizer, topics: Sequence[str], seed: int,
                    temperature: float = TEMPERATURE, max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = 32,
                    progress: bool = False) -> list[Rollout]:
    """One answer per topic (repeat a topic for several), `batch_size` at a time, top-p 1.0.

    A prompt that fills the context gets an empty, cut rollout (ids [], ended False).
    """
    from tqdm.auto import tqdm

    prompts = [prompt_ids(tokenizer, t) for t in topics]
    limit = model.args.max_seq_len
    out: list[Rollout] = []
    starts = range(0, len(topics), batch_size)
    for b, start in enumerate(tqdm(starts, desc="sampling", unit="batch", file=sys.stderr, disable=not progress)):
        chunk = list(range(start, min(start + batch_size, len(topics))))
        fits = [i for i in chunk if len(prompts[i]) < limit]
        answers = dict.fromkeys(chunk, [])
        if fits:
            new = generate(model, [prompts[i] for i in fits], max_new_tokens, temperature=temperature, top_k=None,
                           top_p=1.0, stop_ids=tokenizer.stop_ids, seed=line_seed(seed, b))
            answers.update(zip(fits, new))
        out += [rollout_of(topics[i], prompts[i], answers[i], max_new_tokens, limit) for i in chunk]
    return out


def answer_batch(rollouts: Sequence[Rollout], pad_id: int) -> AnswerBatch:
    """The padded tensors of a list of rollouts (see AnswerBatch); at least one action each."""
    if not rollouts:
        raise ValueError("answer_batch needs at least one rollout")
    n_actions = [len(r.ids) + r.ended for r in rollouts]
    if min(n_actions) == 0:
        raise ValueError("a rollout has no action (no answer token and no stop); leave it out")
    seq = max(len(r.prompt) + len(r.ids) for r in rollouts)
    width = max(n_actions)
    tokens = torch.full((len(rollouts), seq), pad_id, dtype=torch.long)  # (batch, seq)
    index = torch.zeros(len(rollouts), width, dtype=torch.long)  # (batch, actions)
    targets = torch.zeros(len(rollouts), width, dtype=torch.long)
    stop = torch.zeros(len(rollouts), width, dtype=torch.bool)
    mask = torch.zeros(len(rollouts), width)
    for row, (r, n) in enumerate(zip(rollouts, n_actions)):
        ids = r.prompt + r.ids
        tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        index[row, :n] = torch.arange(len(r.prompt) - 1, len(r.prompt) - 1 + n)
        targets[row, :len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        if r.ended:
            stop[row, len(r.ids)] = True
        mask[row, :n] = 1.0
    return AnswerBatch(tokens, index, targets, stop, mask)


def gather_positions(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x `(batch, seq, ...)` at the positions `index` `(batch, actions)` -> `(batch, actions, ...)`."""
    rows = torch.arange(x.shape[0], device=x.device)[:, None]  # (batch, 1)
    return x[rows, index.to(x.device)]


def action_logprobs(logits: torch.Tensor, batch: AnswerBatch,
                    stop_ids: Sequence[int]) -> torch.Tensor:
    """log pi(a_t | x, a_<t) `(batch, actions)` float32, 0 at padding, from logits
    `(batch, seq, vocab)`.

    STOP's log-probability is the logsumexp over `stop_ids` (one event, module docstring).
    """
    # (batch, actions, vocab)
    logp = torch.log_softmax(gather_positions(logits, batch.index).float(), dim=-1)
    device = logp.device
    # (batch, actions)
    token = logp.gather(-1, batch.targets.to(device)[..., None]).squeeze(-1)
    stopping = (torch.logsumexp(logp[..., list(stop_ids)], dim=-1) if stop_ids
                else torch.full_like(token, -torch.inf))
    out = torch.where(batch.stop.to(device), stopping, token)
    return out * batch.mask.to(device)


def answer_logprobs(model: Transformer, batch: AnswerBatch, stop_ids: Sequence[int]) -> torch.Tensor:
    """`action_logprobs` of `model`'s own forward pass over `batch.tokens`: `(batch, actions)`."""
    device = model.tok_embeddings.weight.device
    return action_logprobs(model(batch.tokens.to(device)), batch, stop_ids)
