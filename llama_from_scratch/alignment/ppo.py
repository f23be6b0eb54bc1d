"""PPO's pieces, each a small function of tensors `(batch, actions)` with a mask for padding.

    per-token reward   r_t = -beta * (log pi(a_t) - log pi_ref(a_t)),  plus at the LAST action
                       the score as given; ppo_train passes the reward model's scores whitened
                       over the batch (`whiten`; LLaMA 2, section 3.2.3: "we also find it
                       important to whiten the final linear scores ... to increase stability
                       and balance properly with the KL penalty term")
    GAE                delta_t = r_t + gamma * V_{t+1} - V_t (V = 0 after the last action),
                       A_t = sum_k (gamma * lambda)^k delta_{t+k};  returns R_t = A_t + V_t
    policy loss        -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A),  ratio = pi / pi_old:
                       once the ratio has left [1 - eps, 1 + eps] in the direction A favours,
                       the clipped term is the minimum and its gradient is exactly zero
    value loss         max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2) / 2

Means are over real actions (the mask), every action of the batch weighing the same.
Not handled: a discount or a trace-decay per answer (one gamma and lambda for all).

Chapter: rlhf.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real entries (all of `x` when `mask` is None); 0 at padding."""
    mask = torch.ones_like(x) if mask is None else mask
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


def last_action(mask: torch.Tensor) -> torch.Tensor:
    """The index of each row's last real action `(batch,)` int64, from the mask `(batch, actions)`."""
    counts = mask.sum(dim=-1).long()
    if bool((counts < 1).any()):
        raise ValueError("every answer needs at least one action")
    return counts - 1


def per_token_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, scores: torch.Tensor,
                      mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t `(batch, actions)`: the KL penalty at every action, `scores` `(batch,)` added at the
    last."""
    rewards = -beta * (logp - ref_logp) * mask
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last_action(mask)] += scores.to(rewards.dtype)
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns `(batch, actions)` each, by the backward recursion
    A_t = delta_t + gamma * lambda * A_{t+1}; padding (mask 0) is past the end: V and A are 0
    there."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = advantage
        next_value, next_advantage = values[:, t], advantage
    return advantages, advantages + values


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (a scalar to minimise) and the fraction of actions clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped < unclipped).float(), mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float = 0.2) -> torch.Tensor:
    """The clipped value loss (a scalar): a new value may not move further than `clip` from the
    value it had when the rollout was scored, unless that lowers the loss."""
    moved = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (moved - returns) ** 2), mask)
