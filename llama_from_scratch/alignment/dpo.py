"""Direct preference optimisation (DPO): the labeler's pairs, no reward model, no sampling to train.

Rafailov et al. (2023) show that the policy maximising reward - beta * KL(pi || pi_ref) makes the
reward r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)) + a term of x alone, so the ranking loss of a
reward model (chapter 11) can be written on the policy itself:

    L = -log sigmoid(beta * ((log pi - log pi_ref)(y_chosen) - (log pi - log pi_ref)(y_rejected)))

`dpo_loss` is that, from summed answer log-probabilities `(pairs,)`. The pairs are the reward
model's own training pairs (reward_dir's pairs.jsonl, split "train"); held-out lines of such a file
are measurement only and are never read for training (`read_pairs` leaves them out and counts them).
An answer's log-probability is rollouts.answer_logprobs over its re-encoded text (prompt + answer,
cut to the context), without a STOP action: a pairs file does not say which answers ended.

    setting          DPO paper                              here (stories260K, one CPU thread)
    beta             0.1                                    0.5 (1)
    optimizer        RMSprop, lr 1e-6, 150 warmup steps     AdamW (training.optimizer), lr 1e-4,
                                                            10 warmup steps, then constant (2)
    batch            64 pairs                               64 pairs (1)
    stop             a fixed number of steps                `steps` (100), or earlier when the KL
                                                            to the SFT model on TRAINING prompts
                                                            passes `max_kl` (measured every
                                                            `kl_every` steps; the weights of the
                                                            last measurement within it are kept)

Measured on the committed SFT model and the reward model's 8,191 training pairs (held-out
topics, 128 answers; SFT 0.94): beta 0.1, 16 pairs a step, 100 steps: true score 1.46 at a KL
of 11.6 nats; beta 0.5, 16 pairs, 150 steps: 1.38 at 7.6; beta 0.5, 64 pairs, 100 steps: 1.36 at
4.5 (the most true score per nat, four times the compute per step); leaving out the
"negligibly better / unsure" pairs (beta 0.5, 16 pairs, 150 steps): 1.39 at 8.8, within noise of
keeping them. Every run raised the topic term (0.40 to 0.48-0.54) as well as the sentiment.
(1) A larger beta saturates the loss sooner, a larger batch averages out the labeler's noise:
    both spend less KL on noise.
(2) the issue's own trial: 1e-4 reached 8.5 nats in 75 steps; 5e-4 reached 110 nats in 100.

Not handled: IPO or other variants of the loss, label smoothing (conservative DPO).

Chapter: rlhf.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llama_from_scratch.alignment.errors import AlignmentError, require_ints, stop_unless_finite
from llama_from_scratch.alignment.instructions import prompt_ids
from llama_from_scratch.alignment.kl import sampled_kl
from llama_from_scratch.alignment.labeler import STRENGTHS
from llama_from_scratch.alignment.preferences import PreferencePair
from llama_from_scratch.alignment.reward_model import reward_ids
from llama_from_scratch.alignment.rollouts import Rollout, answer_batch, answer_logprobs, sample_rollouts
from llama_from_scratch.alignment.sampler import line_seed
from llama_from_scratch.alignment.sft import batch_indices
from llama_from_scratch.alignment.task import check_training_topic
from llama_from_scratch.alignment.true_score import true_score
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.optimizer import AdamW, param_groups
from llama_from_scratch.training.schedule import lr_at


@dataclass(frozen=True)
class DPOSettings:
    steps: int = 100
    batch_size: int = 64
    beta: float = 0.5
    lr: float = 1e-4
    warmup: int = 10
    weight_decay: float = 0.1
    clip: float = 1.0
    max_kl: float = 8.0  # nats per answer, on training prompts; math.inf: never stop early
    kl_every: int = 10
    kl_answers: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("steps", "batch_size", "kl_every", "kl_answers"))
        if not (self.beta > 0 and self.lr > 0 and self.warmup >= 0 and self.weight_decay >= 0 and self.clip > 0
                and self.max_kl > 0):
            raise AlignmentError(f"need beta > 0, lr > 0, warmup >= 0, clip > 0 and max_kl > 0; got {self}")
        require_ints(self, ("seed",), minimum=0)


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over pairs of -log sigmoid(beta * (chosen log-ratio - rejected log-ratio));
    inputs `(pairs,)`."""
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def read_pairs(path: str | Path) -> tuple[list[PreferencePair], dict[str, int]]:
    """The training pairs of a pairs file (reward_dir's pairs.jsonl) and counts {"train", "heldout"}.

    Held-out lines are counted and left out; AlignmentError naming the line for anything malformed,
    a "train" line with a held-out topic, or a file with no training pair.
    """
    pairs, counts = [], {"train": 0, "heldout": 0}
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as err:
        raise AlignmentError(f"cannot read --pairs {path}: {err.strerror or err}") from None
    for number, raw in enumerate(lines, start=1):
        try:
            row = json.loads(raw)
            split, strength = row["split"], row["strength"]
            if split not in counts or strength not in STRENGTHS:
                raise ValueError(f"split {split!r} or strength {strength!r} is not one of the labeler's")
            counts[split] += 1
            if split == "train":
                check_training_topic(row["topic"])
                pairs.append(PreferencePair(**{k: row[k] for k in PreferencePair.__dataclass_fields__}))
        except (ValueError, KeyError, TypeError, AlignmentError) as err:
            raise AlignmentError(f"{path} line {number} is not a preference pair of `align reward` ({err})") from None
    if not pairs:
        raise AlignmentError(f"{path} holds no training pair ({counts['heldout']} held-out ones, which are for "
                             "measurement only): give the pairs.jsonl of an `align reward` folder")
    return pairs, counts


def pair_rollouts(tokenizer: Tokenizer, pairs: Sequence[PreferencePair],
                  max_len: int) -> list[tuple[Rollout, Rollout]]:
    """(chosen, rejected) per pair as rollouts without a STOP action, read as the reward model
    reads them (reward_model.reward_ids: prompt + answer, cut to `max_len`)."""
    def rollout(topic: str, answer: str) -> Rollout:
        prompt = prompt_ids(tokenizer, topic)
        ids = reward_ids(tokenizer, topic, answer, max_len)[len(prompt):]
        if not ids:
            raise AlignmentError(f"a pair about {topic!r} has an answer with no token in the context")
        return Rollout(topic, prompt, ids, False)

    return [(rollout(p.topic, p.chosen), rollout(p.topic, p.rejected)) for p in pairs]


def kl_on_training_prompts(policy: Transformer, reference: Transformer, tokenizer: Tokenizer,
                           topics: Sequence[str], seed: int) -> tuple[float, float]:
    """Mean sampled KL (nats per answer) and mean true score of fresh answers to `topics`, one each."""
    with torch.no_grad():
        rollouts = [r for r in sample_rollouts(policy, tokenizer, topics, seed, batch_size=len(topics))
                    if r.ids or r.ended]
        batch = answer_batch(rollouts, tokenizer.eos_id)
        logp = answer_logprobs(policy, batch, tokenizer.stop_ids)
        ref = answer_logprobs(reference, batch, tokenizer.stop_ids)
    scores = [true_score(tokenizer.decode(r.ids), r.topic) for r in rollouts]
    return sampled_kl(logp, ref, batch.mask).mean().item(), sum(scores) / len(scores)


def train_dpo(policy: Transformer, reference: Transformer, tokenizer: Tokenizer, pairs: Sequence[PreferencePair],
              settings: DPOSettings, progress: bool = False) -> list[dict]:
    """Train `policy` in place; one record {"step", "lr", "loss", "accuracy", "margin", "grad_norm"} per
    step, plus "kl" and "true_score" (fresh answers to training prompts) every `kl_every` steps.

    When a measured KL passes `max_kl`, training stops and the policy goes back to its weights at
    the last measurement within the budget (the SFT weights if there was none): the records then
    end at the step that passed it, and the kept step is the last record with a "kl" <= max_kl.
    """
    from tqdm.auto import tqdm

    topics = sorted({check_training_topic(p.topic) for p in pairs})
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = AdamW(param_groups(policy, settings.weight_decay), lr=settings.lr, weight_decay=settings.weight_decay)
    batches = batch_indices(len(pairs), min(settings.batch_size, len(pairs)), settings.seed)
    kl_topics = [topics[i % len(topics)] for i in range(settings.kl_answers)]
    stop_ids, encoded = tokenizer.stop_ids, pair_rollouts(tokenizer, pairs, policy.args.max_seq_len)
    records: list[dict] = []
    within = copy.deepcopy(policy.state_dict())  # the last weights measured within the KL budget
    previous = None  # the weights before the latest update
    bar = tqdm(range(settings.steps), desc="DPO", unit="step", file=sys.stderr, disable=not progress)
    for step in bar:
        # constant after the warmup (a final ratio of 1)
        lr = lr_at(step, settings.lr, min(settings.warmup, settings.steps), settings.steps, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr
        chunk = [encoded[i] for i in next(batches)]
        batch = answer_batch([c for c, _ in chunk] + [r for _, r in chunk], tokenizer.eos_id)  # chosen first
        with torch.no_grad():
            ref = answer_logprobs(reference, batch, stop_ids).sum(-1)  # (2 * pairs,)
        policy.train()
        logp = answer_logprobs(policy, batch, stop_ids).sum(-1)  # (2 * pairs,)
        n = len(chunk)
        loss = dpo_loss(logp[:n], logp[n:], ref[:n], ref[n:], settings.beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(clip_grad_norm(policy.parameters(), settings.clip))
        stop_unless_finite(policy, previous, loss.item(), norm, step, records, "DPO")
        previous = copy.deepcopy(policy.state_dict())
        optimizer.step()
        policy.eval()
        margin = ((logp[:n] - ref[:n]) - (logp[n:] - ref[n:])).detach()
        record = {"step": step + 1, "lr": lr, "loss": loss.item(), "accuracy": (margin > 0).float().mean().item(),
                  "margin": margin.mean().item(), "grad_norm": norm}
        if (step + 1) % settings.kl_every == 0 or step + 1 == settings.steps:
            record["kl"], record["true_score"] = kl_on_training_prompts(policy, reference, tokenizer, kl_topics,
                                                                        line_seed(settings.seed, step))
        records.append(record)
        bar.set_postfix(loss=f"{loss.item():.3f}", kl=f"{record.get('kl', float('nan')):.1f}")
        if record.get("kl", 0.0) > settings.max_kl:
            policy.load_state_dict(within)
            break
        if "kl" in record:
            within = copy.deepcopy(policy.state_dict())
    return records
