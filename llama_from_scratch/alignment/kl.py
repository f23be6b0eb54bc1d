"""The KL divergence of a policy from the SFT model, per answer, in nats.

    KL(pi || pi_ref) for a prompt x = E_{y ~ pi} [ log pi(y | x) - log pi_ref(y | x) ]
                                    = E_{y ~ pi} [ sum_t log pi(a_t | .) - log pi_ref(a_t | .) ]

Two ways to compute it from answers sampled from pi:

    sampled_kl   the sum of log-ratios of the actions actually taken (`rollouts.action_logprobs`):
                 what PPO puts in its per-token reward, one draw per answer; unbiased, noisy, and
                 a single answer's value can be negative
    exact_kl     at each position of the same answers, the exact KL of the next-action
                 distributions, summed over the whole vocabulary (STOP as one action, as in
                 rollouts.py), then summed along the answer: also unbiased for the answer-level
                 KL (the tower rule), never negative, and less noisy

Both are per answer `(batch,)`; the KL the chapters report is their mean over answers. The test
suite checks the two against each other and against an enumeration of every answer of a tiny
model. Not handled: answers cut by the token budget count only their actions so far (the KL of
the budget-truncated distributions, which is what measurement samples).

Chapter: rlhf.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llama_from_scratch.alignment.rollouts import AnswerBatch, gather_positions


def sampled_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_t (log pi - log pi_ref) over each answer's actions: `(batch,)` from `(batch, actions)` each."""
    return ((logp - ref_logp) * mask).sum(dim=-1)


def merge_stop(logp: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """Log-probabilities `(..., vocab)` -> `(..., vocab - len(stop_ids) + 1)`: the stop ids merged
    into one last entry, STOP, their logsumexp."""
    if not stop_ids:
        return logp
    keep = [i for i in range(logp.shape[-1]) if i not in set(stop_ids)]
    return torch.cat([logp[..., keep], torch.logsumexp(logp[..., list(stop_ids)], dim=-1, keepdim=True)], dim=-1)


def position_kl(logits: torch.Tensor, ref_logits: torch.Tensor, stop_ids: Sequence[int] = ()) -> torch.Tensor:
    """KL(p || q) of next-action distributions, summed over the vocabulary: `(...)` from logits
    `(..., vocab)` each (float32 inside)."""
    logp = merge_stop(torch.log_softmax(logits.float(), dim=-1), stop_ids)
    logq = merge_stop(torch.log_softmax(ref_logits.float(), dim=-1), stop_ids)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor, batch: AnswerBatch,
             stop_ids: Sequence[int] = ()) -> torch.Tensor:
    """`position_kl` at every action's position, summed along each answer: `(batch,)`.

    logits and ref_logits: `(batch, seq, vocab)` over `batch.tokens`.
    """
    at = position_kl(gather_positions(logits, batch.index),
                     gather_positions(ref_logits, batch.index), stop_ids)
    return (at * batch.mask.to(at.device)).sum(dim=-1)
