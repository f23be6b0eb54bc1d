"""Preference data: two answers per prompt from the SFT policy, judged by the simulated labeler.

    1. sample   pair i asks about topics[i % len(topics)]; both answers are drawn from the policy
                at temperature 1.0, top-p 1.0, until EOS or BOS or `max_new_tokens` (256), as in
                measurement (sampler.py);
    2. check    a pair is skipped and counted when its prompt leaves no room for an answer in the
                context ("past_context"), an answer is empty or whitespace ("empty"), or the two
                texts are the same ("identical"; the labeler would refuse it);
    3. label    `labeler.label` with one seeded numpy generator for the whole set, in pair order
                (a skipped pair draws no noise): chosen, rejected and one of LLaMA 2's strengths.

The split, stated plainly: TRAINING pairs come from topics.json's `train` topics only
(`task.check_training_topic` refuses a held-out one before anything is sampled); the HELD-OUT
pairs, built the same way from the `heldout` topics, are a measurement set: the reward model is
evaluated on them and never trained on them (`reward_train.train_reward` refuses a held-out
pair). So held-out accuracy measures how well the reward generalises to requests it never saw.

Determinism: batch b (`batch_size` pairs, both answers of a pair side by side) is sampled with a
generator seeded by `sampler.line_seed(seed, b)`, and the labeler's generator by
`line_seed(seed, LABELER_STREAM)`; the pairs depend on the seed and the batch size only.
Not handled: more than two answers per prompt (LLaMA 2 also compares two), ties in the
labeler's noisy scores (it then prefers the second answer, as labeler.py says).

Chapter: reward_model.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.instructions import prompt_ids
from llama_from_scratch.alignment.labeler import STRENGTHS, label
from llama_from_scratch.alignment.sampler import MAX_NEW_TOKENS, TEMPERATURE, TOP_P, line_seed
from llama_from_scratch.alignment.task import check_topic, check_training_topic
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

SKIPS = ("past_context", "empty", "identical")  # in the order they are checked
SPLITS = ("train", "heldout")
LABELER_STREAM = 2**31  # the labeler's seed index: far from any batch index


@dataclass(frozen=True)
class PreferencePair:
    topic: str
    chosen: str  # the answer the labeler preferred
    rejected: str
    strength: str  # one of labeler.STRENGTHS
    chosen_score: float  # true scores
    rejected_score: float
    chosen_is_a: bool  # whether the chosen answer was the first one sampled (for calibration)
    split: str  # "train" or "heldout"

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PreferenceData:
    pairs: list[PreferencePair]  # labelled pairs, in sampling order
    counts: dict[str, int]  # "requested", every skip (SKIPS), "labelled", then each strength
    split: str


def check_pair(topic: str, a: str, b: str, n_prompt: int, max_seq_len: int) -> str | None:
    """Why a sampled pair cannot be used (one of SKIPS), or None when it can.

    `n_prompt` is the prompt's length in tokens: with `max_seq_len` or more there is no room for
    an answer token in the context, so the reward model could not read one.
    """
    check_topic(topic)
    if n_prompt >= max_seq_len:
        return "past_context"
    if not a.strip() or not b.strip():
        return "empty"
    if a == b:
        return "identical"
    return None


def sample_pair_answers(model: Transformer, tokenizer: Tokenizer, topics: Sequence[str], seed: int,
                   batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS,
                   progress: bool = False) -> list[tuple[str, str] | None]:
    """Two answers (texts) to each topic's prompt, in order; None where the prompt fills the context.

    Pairs are sampled `batch_size` at a time (2 * batch_size sequences); batch b uses a generator
    seeded with `line_seed(seed, b)`.
    """
    from tqdm.auto import tqdm

    prompts = [prompt_ids(tokenizer, t) for t in topics]
    fits = [i for i, p in enumerate(prompts) if len(p) < model.args.max_seq_len]
    answers: list[tuple[str, str] | None] = [None] * len(topics)
    starts = range(0, len(fits), batch_size)
    for b, start in enumerate(tqdm(starts, desc="sampling pairs", unit="batch", file=sys.stderr,
                                   disable=not progress)):
        chunk = fits[start:start + batch_size]
        batch = [prompts[i] for i in chunk for _ in range(2)]  # (a, b) of a pair side by side
        out = generate(model, batch, max_new_tokens, temperature=TEMPERATURE, top_k=None, top_p=TOP_P,
                       stop_ids=tokenizer.stop_ids, seed=line_seed(seed, b))
        for k, i in enumerate(chunk):
            answers[i] = (tokenizer.decode(out[2 * k]), tokenizer.decode(out[2 * k + 1]))
    return answers


def label_pairs(topics: Sequence[str], answers: Sequence[tuple[str, str] | None], n_prompts: Sequence[int],
                max_seq_len: int, seed: int, split: str) -> PreferenceData:
    """Check and label sampled pairs (see the module docstring): the usable ones and every count.

    `answers[i]` is None when prompt i was never sampled (it filled the context).
    """
    if split not in SPLITS:
        raise AlignmentError(f"split must be one of {SPLITS}, got {split!r}")
    generator = np.random.default_rng(line_seed(seed, LABELER_STREAM))
    counts = Counter({"requested": len(topics), **dict.fromkeys(SKIPS, 0), "labelled": 0,
                      **dict.fromkeys(STRENGTHS, 0)})
    pairs = []
    for topic, pair, n_prompt in zip(topics, answers, n_prompts, strict=True):
        a, b = pair if pair is not None else ("", "")
        reason = "past_context" if pair is None else check_pair(topic, a, b, n_prompt, max_seq_len)
        if reason:
            counts[reason] += 1
            continue
        verdict = label(topic, a, b, generator)
        counts["labelled"] += 1
        counts[verdict.strength] += 1
        pairs.append(PreferencePair(topic, verdict.chosen, verdict.rejected, verdict.strength, verdict.chosen_score,
                          verdict.rejected_score, verdict.chosen_is_a, split))
    return PreferenceData(pairs, dict(counts), split)


def preference_pairs(model: Transformer, tokenizer: Tokenizer, topics: Sequence[str], n_pairs: int, seed: int,
                     split: str, batch_size: int = 32, max_new_tokens: int = MAX_NEW_TOKENS,
                     progress: bool = False) -> PreferenceData:
    """`n_pairs` prompts cycling through `topics`, each answered twice by `model` and labelled.

    For `split="train"` every topic must be allowed in training (AlignmentError otherwise,
    before any sampling); for "heldout" any topic is accepted: it is measurement.
    """
    if split not in SPLITS:
        raise AlignmentError(f"split must be one of {SPLITS}, got {split!r}")
    if type(n_pairs) is not int or n_pairs < 1 or not topics:
        raise AlignmentError(f"need at least one topic and n_pairs >= 1, got {len(topics)} topics and {n_pairs!r}")
    topics = [check_training_topic(t) if split == "train" else check_topic(t) for t in topics]
    asked = [topics[i % len(topics)] for i in range(n_pairs)]
    answers = sample_pair_answers(model, tokenizer, asked, seed, batch_size, max_new_tokens, progress)
    n_prompts = [len(prompt_ids(tokenizer, t)) for t in asked]
    return label_pairs(asked, answers, n_prompts, model.args.max_seq_len, seed, split)
