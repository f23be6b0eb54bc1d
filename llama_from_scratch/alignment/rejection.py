"""Rejection sampling: K answers per prompt, the best by the reward model, then fine-tuning on those.

LLaMA 2 (section 3.2.3) samples K answers per prompt from the latest model, scores them with the
reward model, keeps the best one of each prompt as "the new gold standard" and fine-tunes on
those, as in SFT. How much that can help is the best-of-K curve: the expected true score of
the answer picked out of K. With N >= K answers of a prompt sorted by the picker's key (the
reward, or the true score itself for the oracle), answer i (1-based, ascending) is the best of a
random K-subset with probability C(i - 1, K - 1) / C(N, K), so

    E[true score of the pick out of K] = sum_i C(i - 1, K - 1) / C(N, K) * true_i

averaged over prompts (`best_of_k`): every K-subset of the N answers at once, not one noisy draw.

Temperature: LLaMA 2 (Figure 8) found the best temperature for 10 to 100 samples to be 1.2-1.3
for its RLHF model, and stated that the optimum moves as the model changes. Measured here (the
committed SFT and reward models, K = 8, 384 training prompts, 100 fine-tuning steps at 1e-4,
128 held-out answers): at 1.0 the reward model's best of 8 had a true score of 1.27 on the
training prompts and the fine-tuned model 1.18 at a KL of 3.0 nats; at 1.2 the picks were worse
(1.16), and fine-tuning on hotter answers than the model writes moved it much further from the
SFT model (19 nats, at 3e-4 and 150 steps). So answers are sampled at sampler.TEMPERATURE, 1.0,
as measured; LLAMA2_TEMPERATURE is kept for the comparison (`--temperature 1.2`, and the
chapter's best-of-K figure).

    setting          LLaMA 2                               here
    prompts          its RLHF prompt set, every round      `prompts` requests on training topics
    K                up to 10 per prompt (per model)       8
    fine-tuning      as SFT, on the best answers           sft.finetune on the best answers,
                                                           100 steps of 16 at a peak of 1e-4

Not handled: keeping the best answers of several earlier models (LLaMA 2's later rounds did, to
avoid forgetting), a temperature that changes with the round.

Chapter: rlhf.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import comb

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError, require_ints
from llama_from_scratch.alignment.reward_model import RewardModel
from llama_from_scratch.alignment.reward_train import score
from llama_from_scratch.alignment.rollouts import sample_rollouts
from llama_from_scratch.alignment.sampler import TEMPERATURE
from llama_from_scratch.alignment.sft import SFTSettings
from llama_from_scratch.alignment.task import check_training_topic
from llama_from_scratch.alignment.true_score import true_score
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

LLAMA2_TEMPERATURE = 1.2  # Touvron et al. 2023, Figure 8: 1.2-1.3 for 10-100 samples


@dataclass(frozen=True)
class RejectionSettings:
    prompts: int = 384
    k: int = 8
    temperature: float = TEMPERATURE
    max_new_tokens: int = 256
    sft: SFTSettings = field(default_factory=lambda: SFTSettings(steps=100, lr=1e-4))
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("prompts", "k"))
        if not self.temperature > 0 or type(self.max_new_tokens) is not int or self.max_new_tokens < 1:
            raise AlignmentError(f"need temperature > 0 and max_new_tokens >= 1, got {self.temperature} and "
                                 f"{self.max_new_tokens}")


def pick_weights(n: int, k: int) -> np.ndarray:
    """P(answer i of n, ascending by key, is the best of a random k-subset) `(n,)`; sums to 1."""
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    return np.array([comb(i, k - 1) for i in range(n)], dtype=np.float64) / comb(n, k)


def best_of_k(keys: np.ndarray, values: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """E[value of the answer with the highest key among K], averaged over prompts, for each K.

    keys, values: `(prompts, n)`; returns `(len(ks),)` float64.
    """
    keys, values = np.asarray(keys, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if keys.shape != values.shape or keys.ndim != 2:
        raise ValueError("need keys and values of one shape (prompts, n), got "
                         f"{keys.shape} and {values.shape}")
    order = np.argsort(keys, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)  # (prompts, n): ascending by key
    return np.array([(ranked @ pick_weights(keys.shape[1], k)).mean() for k in ks])


@dataclass
class Candidates:
    topics: list[str]  # one per prompt
    texts: list[list[str]]  # (prompts, K) answers
    ended: list[list[bool]]
    rewards: np.ndarray  # (prompts, K) the reward model's scores
    true: np.ndarray  # (prompts, K) true scores

    def best(self) -> list[dict]:
        """The reward model's pick of each prompt as an SFT example {"topic", "response", "ended"}."""
        pick = self.rewards.argmax(axis=1)
        return [{"topic": t, "response": self.texts[i][pick[i]], "ended": self.ended[i][pick[i]]}
                for i, t in enumerate(self.topics)]


def candidates(policy: Transformer, reward_model: RewardModel, tokenizer: Tokenizer, topics: Sequence[str], k: int,
               seed: int, temperature: float = TEMPERATURE, max_new_tokens: int = 256,
               progress: bool = False) -> Candidates:
    """K answers to each topic's prompt (any topic: held-out ones only to measure), scored both ways."""
    asked = [t for t in topics for _ in range(k)]
    rollouts = sample_rollouts(policy, tokenizer, asked, seed, temperature, max_new_tokens, batch_size=64,
                               progress=progress)
    texts = [tokenizer.decode(r.ids) for r in rollouts]
    if progress:
        print(f"scoring {len(texts)} answers with the reward model", file=sys.stderr)
    rewards = score(reward_model, tokenizer, list(zip(asked, texts))).reshape(len(topics), k)
    if not np.isfinite(rewards).all():
        raise AlignmentError("the reward model gave a non-finite score; it cannot rank these answers")
    true = np.array([true_score(x, t) for x, t in zip(texts, asked)]).reshape(len(topics), k)
    return Candidates(list(topics), [texts[i * k:(i + 1) * k] for i in range(len(topics))],
                      [[r.ended for r in rollouts[i * k:(i + 1) * k]] for i in range(len(topics))], rewards, true)


def training_prompts(topics: Sequence[str], n: int) -> list[str]:
    """`n` requests cycling through training topics (held-out ones refused)."""
    topics = [check_training_topic(t) for t in topics]
    if not topics:
        raise AlignmentError("rejection sampling needs at least one training topic")
    return [topics[i % len(topics)] for i in range(n)]
