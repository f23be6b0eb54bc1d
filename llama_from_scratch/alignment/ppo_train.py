"""PPO against the reward model with a per-token KL penalty to the SFT model (LLaMA 2's RLHF).

One iteration (`ppo_step`):
    1. rollouts   `rollouts` answers from the policy, to training topics drawn in seeded order,
                  at temperature 1.0, top-p 1.0 (the policy's own distribution, as measured)
    2. score      the reward model's score of each answer, whitened over the batch; the policy's
                  and the SFT model's log-probabilities of every action, the value of every state
    3. advantage  ppo.per_token_rewards (the KL penalty beta * log-ratio at each action, the
                  score at the last), then ppo.gae, advantages whitened over the batch
    4. update     `epochs` passes of minibatches: clipped policy loss + value_coef * clipped
                  value loss, one AdamW step per minibatch, gradients clipped at 1.0

The value head is a `nn.Linear(dim, 1)` on the policy's own body (`ActorCritic`), as one network
with two heads; LLaMA 2 does not say how its value function is built.

    setting          LLaMA 2 (section 3.2.3, 7B)          here (stories260K, one CPU thread)
    KL penalty beta  0.01 (0.005 for 34B and 70B)          0.1 (1)
    batch            512 prompts per iteration             64
    minibatch        64, one gradient step each            16, one gradient step each
    clip             0.2                                   0.2 (policy and value)
    optimizer        AdamW (0.9, 0.95), eps 1e-5, weight   the same (training.optimizer)
                     decay 0.1, gradient clipping 1.0
    learning rate    1e-6, constant                        6e-5, constant
    iterations       200 to 400                            `steps`, default 30 (about 3 minutes)
    GAE              not stated                            gamma 1.0, lambda 1.0 (2)

Measured on the committed SFT and reward models (trials: seed 0, 40 iterations, held-out topics,
128 answers; the committed runs of experiments/alignment_rlhf.py: 256 answers):
(1) An answer is about 250 tokens and its KL a sum over all of them, while the whitened score has
    a standard deviation of 1: at beta 0.01 a drift of 10 nats costs 0.1, nothing. With 0.01 the
    trial's KL reached 27 nats and the true score 1.19 (SFT 0.94), the topic term FELL from 0.40
    to 0.26 and sentiment rose to 1.0: the reward model's blind spot, exploited (the committed
    seed-1 run, 60 iterations: 50 nats, 1.30, five times SFT's repetition). With 0.1: 11 nats,
    1.30 in the trial; 8 nats, 1.31 and 1.33 in the committed 30-iteration runs.
(2) With lambda 0.95 (InstructGPT's and TRL's) the score, given at the last of ~250 actions,
    hardly reaches the early ones through an untrained value head: the reward went from 0.49 to
    0.77 in 40 iterations at beta 0.01 and lr 6e-5; with lambda 1 (Monte Carlo returns) to 1.55.

If a loss, a gradient or a score is not finite, the policy is put back to its weights before
that iteration and errors.TrainingStopped says at which iteration, with the records so far: the
last good checkpoint is what the CLI then saves. A batch whose KL passes `max_kl` ends the run the
same way but quietly (`train_ppo`). Answers with no token at all are left out of the update
and counted ("skipped"); an iteration where every answer is empty is an error.

Chapter: rlhf.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from llama_from_scratch.alignment.errors import AlignmentError, TrainingStopped, require_ints
from llama_from_scratch.alignment.kl import sampled_kl
from llama_from_scratch.alignment.ppo import gae, per_token_rewards, policy_loss, value_loss, whiten
from llama_from_scratch.alignment.reward_model import RewardModel, scalar_head
from llama_from_scratch.alignment.reward_train import score
from llama_from_scratch.alignment.rollouts import (AnswerBatch, action_logprobs, answer_batch,
                                                   answer_logprobs, gather_positions, sample_rollouts)
from llama_from_scratch.alignment.sampler import line_seed
from llama_from_scratch.alignment.sft import batch_indices
from llama_from_scratch.alignment.task import check_training_topic
from llama_from_scratch.alignment.true_score import true_score
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.optimizer import AdamW, param_groups


@dataclass(frozen=True)
class PPOSettings:
    steps: int = 30
    rollouts: int = 64
    minibatch: int = 16
    epochs: int = 1
    beta: float = 0.1
    lr: float = 6e-5
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 1.0
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    max_new_tokens: int = 256
    max_kl: float = 10.0  # nats per answer, the batch's own KL; math.inf: never stop early
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("steps", "rollouts", "minibatch", "epochs", "max_new_tokens"))
        if not (self.beta >= 0 and self.lr > 0 and self.clip > 0 and self.value_clip > 0 and self.value_coef >= 0
                and 0 <= self.gamma <= 1 and 0 <= self.lam <= 1 and self.grad_clip > 0 and self.weight_decay >= 0
                and self.max_kl > 0):
            raise AlignmentError(f"need beta >= 0, lr > 0, clips > 0, gamma and lambda in [0, 1]; got {self}")
        require_ints(self, ("seed",), minimum=0)


class ActorCritic(nn.Module):
    """The policy (a Transformer) and a value head on its final hidden states."""

    def __init__(self, policy: Transformer, generator: torch.Generator | None = None):
        super().__init__()
        self.policy = policy
        self.value_head = scalar_head(policy, generator)

    def forward(self, batch: AnswerBatch, stop_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi of each action and V of the state it was taken in: `(batch, actions)` each."""
        tokens = batch.tokens.to(self.value_head.weight.device)
        h = self.policy.hidden_states(tokens)  # (batch, seq, dim)
        logp = action_logprobs(self.policy.output(h), batch, stop_ids)  # (batch, actions)
        values = self.value_head(gather_positions(h, batch.index)).squeeze(-1).float()  # (batch, actions)
        return logp, values * batch.mask.to(values.device)


def ppo_step(actor: ActorCritic, reference: Transformer, reward_model: RewardModel, tokenizer: Tokenizer,
             optimizer: torch.optim.Optimizer, topics: Sequence[str], settings: PPOSettings, step: int) -> dict:
    """One iteration (module docstring) on the prompts `topics`; its record."""
    rollouts = sample_rollouts(actor.policy, tokenizer, topics, line_seed(settings.seed, step),
                               max_new_tokens=settings.max_new_tokens, batch_size=len(topics))
    kept = [r for r in rollouts if r.ids]
    if not kept:
        raise AlignmentError(f"iteration {step + 1}: every answer was empty; nothing to learn from")
    texts = [tokenizer.decode(r.ids) for r in kept]
    batch = answer_batch(kept, tokenizer.eos_id)
    stop_ids = tokenizer.stop_ids
    with torch.no_grad():
        old_logp, old_values = actor(batch, stop_ids)
        ref_logp = answer_logprobs(reference, batch, stop_ids)
        raw = torch.from_numpy(score(reward_model, tokenizer, list(zip((r.topic for r in kept), texts)))).float()
        if not bool(torch.isfinite(raw).all()):
            raise AlignmentError(f"the reward model gave a non-finite score at iteration {step + 1}")
        mask = batch.mask
        rewards = per_token_rewards(old_logp, ref_logp, whiten(raw), mask, settings.beta)
        advantages, returns = gae(rewards, old_values, mask, settings.gamma, settings.lam)
        advantages = whiten(advantages, mask)
    actor.train()
    losses = []
    generator = torch.Generator().manual_seed(line_seed(settings.seed, step) % 2**62)
    for _ in range(settings.epochs):
        order = torch.randperm(len(kept), generator=generator).tolist()
        for start in range(0, len(kept), settings.minibatch):
            rows = order[start:start + settings.minibatch]
            mini = AnswerBatch(*(t[rows] for t in batch))
            logp, values = actor(mini, stop_ids)
            pg, clipped = policy_loss(logp, old_logp[rows], advantages[rows], mini.mask, settings.clip)
            vf = value_loss(values, old_values[rows], returns[rows], mini.mask, settings.value_clip)
            loss = pg + settings.value_coef * vf
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(clip_grad_norm(actor.parameters(), settings.grad_clip))
            if not (math.isfinite(loss.item()) and math.isfinite(norm)):
                raise AlignmentError(f"the PPO loss became {loss.item()} (gradient norm {norm}) at iteration "
                                     f"{step + 1}")
            optimizer.step()
            losses.append((pg.item(), vf.item(), clipped.item()))
    actor.eval()
    kl = sampled_kl(old_logp, ref_logp, mask)
    pg, vf, clipped = np.mean(losses, axis=0)
    return {"step": step + 1, "reward": raw.mean().item(), "kl": kl.mean().item(),
            "true_score": float(np.mean([true_score(t, r.topic) for t, r in zip(texts, kept)])),
            "length": float(np.mean([len(r.ids) for r in kept])), "policy_loss": float(pg), "value_loss": float(vf),
            "clip_fraction": float(clipped), "skipped": len(rollouts) - len(kept)}


def train_ppo(policy: Transformer, reference: Transformer, reward_model: RewardModel, tokenizer: Tokenizer,
              topics: Sequence[str], settings: PPOSettings, progress: bool = False) -> list[dict]:
    """Train `policy` in place (float32, its device) for `settings.steps` iterations; a record each.

    Each iteration's "kl" is that of its own batch, sampled from the weights it started from. When
    it passes `max_kl`, training stops and the policy goes back to the weights of the last
    iteration within it (the records end with the one that passed it): the KL budget is kept
    by construction, on training prompts. DPO (dpo.py) does the same with a margin, since it
    measures only every few steps.

    `topics` are training topics only (held-out ones are refused); `reference` is the frozen SFT
    model. The value head is trained alongside and dropped at the end (the policy is what is kept).
    """
    from tqdm.auto import tqdm

    topics = [check_training_topic(t) for t in topics]
    if not topics:
        raise AlignmentError("PPO needs at least one training topic")
    for p in list(reference.parameters()) + list(reward_model.parameters()):
        p.requires_grad_(False)
    actor = ActorCritic(policy, torch.Generator().manual_seed(settings.seed))
    optimizer = AdamW(param_groups(actor, settings.weight_decay), lr=settings.lr, weight_decay=settings.weight_decay)
    prompts = batch_indices(len(topics), settings.rollouts, settings.seed)
    records: list[dict] = []
    within = copy.deepcopy(policy.state_dict())  # the last weights whose batch KL was within max_kl
    bar = tqdm(range(settings.steps), desc="PPO", unit="iteration", file=sys.stderr, disable=not progress)
    for step in bar:
        good = copy.deepcopy(policy.state_dict())
        try:
            record = ppo_step(actor, reference, reward_model, tokenizer, optimizer, [topics[i] for i in next(prompts)],
                              settings, step)
        except AlignmentError as err:
            policy.load_state_dict(good)
            raise TrainingStopped(f"{err}; the policy is kept as it was after iteration {step}", step + 1,
                                  records) from None
        records.append(record)
        bar.set_postfix(reward=f"{record['reward']:.2f}", kl=f"{record['kl']:.1f}", true=f"{record['true_score']:.2f}")
        if record["kl"] > settings.max_kl:  # measured on `good`, the weights this iteration started from
            policy.load_state_dict(within)
            break
        within = good
    policy.eval()
    return records
