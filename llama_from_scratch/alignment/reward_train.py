"""Training the reward model on preference pairs, LLaMA 2's way scaled down, and scoring answers.

LLaMA 2's reward-model settings (Touvron et al. 2023, section 3.2.2) and this book's:

    setting          LLaMA 2                                   here (stories260K, one CPU thread)
    start            a pretrained chat-model checkpoint        the SFT policy (reward_model.py)
    data             1.4M Meta comparisons + open data sets    8,192 labelled pairs of the SFT
                                                               model's answers (preferences.py)
    length           one epoch ("longer can over-fit")         one epoch of 8,192 pairs (2)
    learning rate    5e-6 (70B), 1e-5 (others), cosine to 10%  1e-3, cosine to 10% (1)
    warmup           3% of the steps, at least 5               the same
    batch            512 pairs (1,024 rows)                    16 pairs (32 rows), padded
    optimizer        AdamW, weight decay 0.1, clip 1.0         the same (training.optimizer)
    loss             ranking loss with Table 27's margin       --margin none|small|large

Measured on an earlier SFT model (2,000 stories, 300 steps), 256 held-out pairs (single runs; the
batch order alone moved one setting from 51% to 65%, so read these as rough):
(1) The SFT chapter found 2e-5 far too slow for a 260K model (sft.py). On 1,024 pairs for two
    epochs, 1e-3 gave 51-65% held-out accuracy, 3e-3 53%, 5e-4 55% (train pairs 85%: memorised).
(2) The data, not the passes, is what helps, as LLaMA 2 found: on 1,024 pairs, fresh pairs of the
    TRAINING topics were no better than held-out ones (52% and 53%), so the model memorises its
    pairs instead of learning the taste; four epochs reached 98% on them and 60% held out.
The committed runs (experiments/alignment_reward.py, the committed SFT policy, 512 held-out
pairs): 61-64% held out with 4,096 or 8,192 pairs, small, large or no margin, seeds 1 and 2
(72-78% on "significantly better", 47-53% on "negligibly better"); reward-true score correlation
0.39-0.47.
The reward follows the true score's sentiment term (correlation 0.66) and not its topic term
(-0.04): reading whether the answer names the prompt's word is what this model does not learn
from a few thousand pairs. The labeler's noise caps any reward model at about 86% here (the true
score's own agreement with the labeler on the held-out pairs).

Each step takes the next `batch_size` pairs of a stream of seeded permutations (sft.batch_indices),
puts the chosen and the rejected answers of every pair in one padded batch `(2 * pairs, longest)`
and takes one AdamW step on the ranking loss. Held-out pairs are refused: they are measurement
only (preferences.py). Not handled: gradient accumulation, mixed precision, resuming.

Chapter: reward_model.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llama_from_scratch.alignment.errors import AlignmentError, require_ints
from llama_from_scratch.alignment.preferences import PreferencePair
from llama_from_scratch.alignment.reward_model import MARGINS, RewardModel, margins, pad, ranking_loss, reward_ids
from llama_from_scratch.alignment.sft import batch_indices
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.optimizer import AdamW, param_groups
from llama_from_scratch.training.schedule import lr_at


@dataclass(frozen=True)
class RewardSettings:
    margin: str = "small"  # Table 27's "small" margins; "none" is plain Bradley-Terry
    epochs: int = 1
    batch_size: int = 16  # pairs per step
    lr: float = 1e-3
    final_lr_ratio: float = 0.1
    warmup_ratio: float = 0.03  # of the steps, at least MIN_WARMUP
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.margin not in MARGINS:
            raise AlignmentError(f"margin must be one of {', '.join(MARGINS)}, got {self.margin!r}")
        require_ints(self, ("epochs", "batch_size"))
        if not (self.lr > 0 and self.weight_decay >= 0 and self.clip > 0 and 0 <= self.warmup_ratio <= 1):
            raise AlignmentError(f"need lr > 0, weight_decay >= 0, clip > 0 and warmup_ratio in [0, 1]; got {self}")
        require_ints(self, ("seed",), minimum=0)

    def steps(self, n_pairs: int) -> int:
        return self.epochs * math.ceil(n_pairs / self.batch_size)

    def warmup(self, n_pairs: int) -> int:
        return min(self.steps(n_pairs), max(MIN_WARMUP, round(self.warmup_ratio * self.steps(n_pairs))))


MIN_WARMUP = 5


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[PreferencePair],
                 max_len: int) -> list[tuple[list[int], list[int]]]:
    """(chosen ids, rejected ids) per pair, as the reward model reads them (reward_model.reward_ids)."""
    return [(reward_ids(tokenizer, p.topic, p.chosen, max_len), reward_ids(tokenizer, p.topic, p.rejected, max_len))
            for p in pairs]


def train_reward(model: RewardModel, tokenizer: Tokenizer, pairs: Sequence[PreferencePair],
                 settings: RewardSettings, progress: bool = False) -> list[dict[str, float]]:
    """Train `model` in place on training pairs; one record {"step", "lr", "loss", "accuracy",
    "grad_norm"} per step (loss and accuracy: the batch's, before the step's update)."""
    from tqdm.auto import tqdm

    if not pairs:
        raise AlignmentError("there are no training pairs: sample more (--pairs) or check the "
                             "skip counts")
    held = [i for i, p in enumerate(pairs, start=1) if p.split != "train"]
    if held:
        raise AlignmentError(f"pair {held[0]} is a {pairs[held[0] - 1].split} pair: held-out "
                             "pairs are for measurement only, never for training the reward "
                             "model")
    encoded = encode_pairs(tokenizer, pairs, model.body.args.max_seq_len)
    extra = margins([p.strength for p in pairs], settings.margin)  # (pairs,)
    optimizer = AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                      weight_decay=settings.weight_decay)
    steps, warmup = settings.steps(len(pairs)), settings.warmup(len(pairs))
    batches = batch_indices(len(pairs), min(settings.batch_size, len(pairs)), settings.seed)
    device = model.head.weight.device
    model.train()
    records = []
    bar = tqdm(range(steps), desc="reward model", unit="step", file=sys.stderr,
               disable=not progress)
    for step in bar:
        lr = lr_at(step, settings.lr, warmup, steps, settings.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        index = next(batches)
        tokens, lengths = pad([encoded[i][0] for i in index] + [encoded[i][1] for i in index],
                              tokenizer.eos_id)
        # (2 * pairs,): chosen first, then rejected
        rewards = model(tokens.to(device), lengths)
        chosen, rejected = rewards[:len(index)], rewards[len(index):]
        loss = ranking_loss(chosen, rejected, extra[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(clip_grad_norm(model.parameters(), settings.clip))
        if not (math.isfinite(loss.item()) and math.isfinite(grad_norm)):
            raise AlignmentError(f"the reward model's loss became {loss.item()} at step "
                                 f"{step + 1}; lower --lr")
        optimizer.step()
        accuracy = (chosen > rejected).float().mean().item()
        records.append({"step": step + 1, "lr": lr, "loss": loss.item(), "accuracy": accuracy,
                        "grad_norm": grad_norm})
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
    model.eval()
    return records


@torch.inference_mode()
def score(model: RewardModel, tokenizer: Tokenizer, items: Sequence[tuple[str, str]],
          batch_size: int = 32) -> np.ndarray:
    """The reward of each (topic, answer), float64 `(len(items),)`, in order; batches sorted by
    length so that little is spent on padding."""
    ids = [reward_ids(tokenizer, topic, answer, model.body.args.max_seq_len) for topic, answer in items]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros(len(ids))
    device = model.head.weight.device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        tokens, lengths = pad([ids[i] for i in chunk], tokenizer.eos_id)
        out[chunk] = model(tokens.to(device), lengths).double().cpu().numpy()
    return out


def score_pairs(model: RewardModel, tokenizer: Tokenizer, pairs: Sequence[PreferencePair],
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(rewards of the chosen answers, rewards of the rejected ones), each float64 `(pairs,)`."""
    rewards = score(model, tokenizer, [(p.topic, p.chosen) for p in pairs] + [(p.topic, p.rejected) for p in pairs],
                    batch_size)
    return rewards[:len(pairs)], rewards[len(pairs):]
