"""Issue 12, the pieces of RLHF checked against direct computations: GAE against the explicit sum of
discounted deltas, the clipped objective's zero gradient where the ratio is clipped, the value loss,
the per-token reward, the KL estimates against an enumeration of every answer of a tiny model (an
exact sum over the vocabulary at every step), action log-probabilities against a step-by-step loop,
the best-of-K estimator against every K-subset, and the DPO loss against the reward model's ranking
loss on the implied rewards."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama_from_scratch.alignment.dpo import dpo_loss
from llama_from_scratch.alignment.kl import exact_kl, position_kl, sampled_kl
from llama_from_scratch.alignment.ppo import gae, per_token_rewards, policy_loss, value_loss, whiten
from llama_from_scratch.alignment.rejection import best_of_k, pick_weights
from llama_from_scratch.alignment.reward_model import ranking_loss
from llama_from_scratch.alignment.rollouts import Rollout, action_logprobs, answer_batch
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer


def random_mask(batch: int, actions: int, generator: torch.Generator) -> torch.Tensor:
    lengths = torch.randint(1, actions + 1, (batch,), generator=generator)
    return (torch.arange(actions)[None] < lengths[:, None]).float()


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_the_direct_sum_of_discounted_deltas(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g,
                                                                                        dtype=torch.float64)
    mask = random_mask(5, 7, g).double()
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for b in range(5):
        n = int(mask[b].sum())
        v = [values[b, t].item() for t in range(n)] + [0.0]  # V = 0 after the last action
        delta = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            direct = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
            assert advantages[b, t].item() == pytest.approx(direct, abs=1e-12)
            assert returns[b, t].item() == pytest.approx(direct + v[t], abs=1e-12)
        assert advantages[b, n:].abs().sum() == 0  # padding is past the end
    # lambda = 1: the advantage is the return-to-go minus the value (Monte Carlo)
    adv1, _ = gae(rewards, values, mask, 1.0, 1.0)
    togo = (rewards * mask).flip(-1).cumsum(-1).flip(-1)
    assert torch.allclose(adv1, (togo - values) * mask, atol=1e-12)


def test_clipped_objective_has_zero_gradient_exactly_where_the_ratio_is_clipped():
    old = torch.zeros(1, 6)
    # ratio e^x: far above 1 + eps, far below 1 - eps, and inside, with advantages of both signs
    x = torch.tensor([[0.5, 0.5, -0.5, -0.5, 0.05, -0.05]], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0, -3.0]])
    mask = torch.ones(1, 6)
    loss, clipped = policy_loss(x, old, advantages, mask, clip=0.2)
    loss.backward()
    ratio = x.detach().exp()
    # clipped where the ratio left [0.8, 1.2] in the direction the advantage favours
    expected = torch.tensor([[0.0, -1.0 * ratio[0, 1], 1.0 * ratio[0, 2], 0.0, 2.0 * ratio[0, 4],
                              -3.0 * ratio[0, 5]]]) * -1 / 6
    assert torch.allclose(x.grad, expected, atol=1e-7)
    assert x.grad[0, 0] == 0 and x.grad[0, 3] == 0
    assert clipped.item() == pytest.approx(2 / 6)
    # the value: -min(r A, clip(r) A), by hand for the first entry
    assert loss.item() == pytest.approx(float(-torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages)
                                              .mean()), abs=1e-6)


def test_value_loss_is_the_larger_of_the_clipped_and_unclipped_errors():
    values = torch.tensor([[1.0, 0.0, 0.5]])
    old = torch.tensor([[0.0, 0.0, 0.4]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third is padding
    # first: unclipped (1-2)^2 = 1, clipped to 0.2: (0.2-2)^2 = 3.24 -> 3.24; second: 1 and 1 -> 1
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.5 * (3.24 + 1) / 2)


def test_per_token_reward_is_the_kl_penalty_plus_the_score_at_the_last_action():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = per_token_rewards(logp, ref, torch.tensor([3.0, -1.0]), mask, beta=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 3.0], [-0.1, -1.0, 0.0]]))
    # summed over an answer: score - beta * (its sampled KL)
    assert torch.allclose(rewards.sum(-1), torch.tensor([3.0, -1.0]) - 0.1 * sampled_kl(logp, ref, mask))


def test_whiten_gives_mean_zero_and_unit_variance_over_real_entries_only():
    g = torch.Generator().manual_seed(1)
    x, mask = torch.randn(4, 9, generator=g) * 5 + 3, random_mask(4, 9, g)
    w = whiten(x, mask)
    real = w[mask.bool()]
    assert real.mean().item() == pytest.approx(0, abs=1e-5)
    assert real.var(unbiased=False).item() == pytest.approx(1, 1e-4)
    assert (w[~mask.bool()] == 0).all()


# --- log-probabilities and the KL ---------------------------------------------------------------

VOCAB, STOP = 5, (0,)


@pytest.fixture(scope="module")
def tiny_pair():
    """Two different tiny models of one vocabulary: the policy and the reference."""
    args = ModelArgs(dim=16, n_layers=1, n_heads=2, vocab_size=VOCAB, max_seq_len=16, hidden_dim=32)
    models = []
    for seed in (0, 1):
        m = Transformer(args)
        m.init_weights(torch.Generator().manual_seed(seed))
        with torch.no_grad():  # larger logits, so that the two models differ clearly
            m.output.weight.mul_(30)
        models.append(m.double().eval())
    return models


def every_answer(prompt: list[int], max_new: int) -> list[Rollout]:
    """Every answer of at most `max_new` tokens (ids 1..VOCAB-1), ended by STOP or cut at `max_new`."""
    out = []
    for n in range(max_new + 1):
        for ids in itertools.product(range(1, VOCAB), repeat=n):
            out.append(Rollout("dog", prompt, list(ids), ended=n < max_new))
    return out


def step_by_step_logprob(model: Transformer, r: Rollout) -> float:
    """log p(answer) by a loop: one full forward per step, the stop id's probability for STOP."""
    total, seq = 0.0, list(r.prompt)
    with torch.no_grad():
        for t in range(len(r.ids) + r.ended):
            logp = torch.log_softmax(model(torch.tensor([seq]))[0, -1].double(), -1)
            if t < len(r.ids):
                total += logp[r.ids[t]].item()
                seq.append(r.ids[t])
            else:
                total += logp[STOP[0]].item()
    return total


def test_action_logprobs_match_a_step_by_step_loop(tiny_pair):
    policy, _ = tiny_pair
    rollouts = [Rollout("dog", [1, 2], [3, 4, 1], True), Rollout("dog", [1], [2], False),
                Rollout("dog", [1, 2, 3], [], True)]
    batch = answer_batch(rollouts, pad_id=0)
    with torch.no_grad():
        logp = action_logprobs(policy(batch.tokens), batch, STOP)
    for row, r in enumerate(rollouts):
        assert logp[row].sum().item() == pytest.approx(step_by_step_logprob(policy, r), abs=1e-5)  # float32 logits
        assert int(batch.mask[row].sum()) == len(r.ids) + r.ended


def test_kl_estimates_equal_the_exact_kl_summed_over_every_answer(tiny_pair):
    """On a tiny model every answer can be listed: KL(p || q) = sum_y p(y) (log p(y) - log q(y)).
    Both per-answer estimates, weighted by p(y), must give that number (they are unbiased)."""
    policy, reference = tiny_pair
    rollouts = every_answer([1, 2], max_new=3)  # 1 + 4 + 16 + 64 answers
    log_p = np.array([step_by_step_logprob(policy, r) for r in rollouts])
    log_q = np.array([step_by_step_logprob(reference, r) for r in rollouts])
    p = np.exp(log_p)
    assert p.sum() == pytest.approx(1.0, abs=1e-9)  # every answer listed once
    exact = float((p * (log_p - log_q)).sum())
    batch = answer_batch(rollouts, pad_id=0)
    with torch.no_grad():
        logits, ref_logits = policy(batch.tokens), reference(batch.tokens)
        sampled = sampled_kl(action_logprobs(logits, batch, STOP), action_logprobs(ref_logits, batch, STOP), batch.mask)
        summed = exact_kl(logits, ref_logits, batch, STOP)
    assert exact > 0.05  # the two models really differ
    assert float((p * sampled.numpy()).sum()) == pytest.approx(exact, rel=1e-5)
    assert float((p * summed.numpy()).sum()) == pytest.approx(exact, rel=1e-5)
    assert (summed >= 0).all()


def test_position_kl_is_the_sum_over_the_vocabulary_with_stop_ids_merged():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g)
    assert torch.allclose(position_kl(a, b), F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), log_target=True,
                                                      reduction="none").sum(-1), atol=1e-6)
    p, q = a.softmax(-1), b.softmax(-1)
    merged = lambda x: torch.cat([x[:, 2:], x[:, :2].sum(-1, keepdim=True)], -1)  # noqa: E731
    pm, qm = merged(p), merged(q)
    assert torch.allclose(position_kl(a, b, (0, 1)), (pm * (pm / qm).log()).sum(-1), atol=1e-6)


# --- best of K and DPO ----------------------------------------------------------------------------

def test_best_of_k_equals_the_average_over_every_k_subset():
    g = np.random.default_rng(0)
    keys, values = g.normal(size=(3, 6)), g.normal(size=(3, 6))
    for k in range(1, 7):
        brute = np.mean([np.mean([values[p, max(s, key=lambda i: keys[p, i])]
                                  for s in itertools.combinations(range(6), k)]) for p in range(3)])
        assert best_of_k(keys, values, [k])[0] == pytest.approx(brute, abs=1e-12)
    assert pick_weights(6, 3).sum() == pytest.approx(1.0)
    assert best_of_k(values, values, [6])[0] == pytest.approx(values.max(axis=1).mean())  # the oracle at K = n
    assert best_of_k(keys, values, [1])[0] == pytest.approx(values.mean())  # one answer: no choice


def test_dpo_loss_is_the_ranking_loss_on_the_implied_rewards():
    g = torch.Generator().manual_seed(4)
    lw, ll, rw, rl = (torch.randn(8, generator=g, dtype=torch.float64) * 20 for _ in range(4))
    beta = 0.1
    loss = dpo_loss(lw, ll, rw, rl, beta)
    by_hand = -torch.log(torch.sigmoid(beta * ((lw - rw) - (ll - rl)))).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-12)
    implied = ranking_loss(beta * (lw - rw), beta * (ll - rl))  # float32 inside
    assert loss.item() == pytest.approx(implied.item(), rel=1e-6)
    # at the reference the loss is log 2, and it is finite for a huge margin
    assert dpo_loss(rw, rl, rw, rl, beta).item() == pytest.approx(math.log(2))
    huge = dpo_loss(torch.tensor([-1e5]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 1.0)
    assert math.isfinite(huge.item())
