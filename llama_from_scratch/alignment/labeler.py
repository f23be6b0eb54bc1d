"""The simulated labeler: which of two answers the "human" prefers, and how strongly.

For a topic and answers A and B with true scores s_A and s_B it draws independent noise
e_A, e_B ~ Normal(0, 0.25^2) from a seeded numpy generator (e_A first), prefers A when
s_A + e_A > s_B + e_B (B otherwise, ties included), and grades the preference by
d = |(s_A + e_A) - (s_B + e_B)| into LLaMA 2's four strengths (Touvron et al. 2023, section 3.2.1):

    d >= 0.75          significantly better
    0.40 <= d < 0.75   better
    0.15 <= d < 0.40   slightly better
    d < 0.15           negligibly better / unsure

Identical answers are not labelled (None, and no noise is drawn, so a skip does not shift the
draws of the pairs after it); `tally` counts labels by strength and the skips. Not handled here:
empty answers or prompts too long for the context (the preference data decides what to skip).

Chapter: reward_model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.true_score import true_score

NOISE_SD = 0.25
# LLaMA 2's wording, strongest first, each with the smallest d that earns it.
STRENGTHS = ("significantly better", "better", "slightly better", "negligibly better / unsure")
THRESHOLDS = (0.75, 0.40, 0.15, 0.0)
SKIPPED = "skipped (identical answers)"


@dataclass(frozen=True)
class Label:
    chosen: str
    rejected: str
    strength: str  # one of STRENGTHS
    d: float  # |noisy score of chosen - noisy score of rejected|
    chosen_score: float  # true scores
    rejected_score: float
    chosen_noisy: float  # true score + the labeler's noise
    rejected_noisy: float
    chosen_is_a: bool  # whether the chosen answer was the first one given


def strength(d: float) -> str:
    """LLaMA 2's strength for a noisy score difference d >= 0 (thresholds 0.75, 0.40, 0.15)."""
    if not d >= 0:  # also catches NaN
        raise AlignmentError(f"a score difference d must be >= 0, got {d}")
    return next(name for name, low in zip(STRENGTHS, THRESHOLDS) if d >= low)


def label(topic: str, a: str, b: str, generator: np.random.Generator) -> Label | None:
    """The labeler's verdict on answers `a` and `b` to the request about `topic`; None when
    a == b.

    `generator` is a numpy Generator (`numpy.random.default_rng(seed)`); each labelled pair
    takes two normal draws from it, e_A then e_B.
    """
    if not isinstance(generator, np.random.Generator):
        raise AlignmentError("the labeler needs a numpy Generator, e.g. "
                             "numpy.random.default_rng(seed), got "
                             f"{type(generator).__name__}")
    if a == b:
        return None
    score_a, score_b = true_score(a, topic), true_score(b, topic)
    noise_a, noise_b = generator.normal(0.0, NOISE_SD, size=2)
    noisy_a, noisy_b = score_a + float(noise_a), score_b + float(noise_b)
    d = abs(noisy_a - noisy_b)
    if noisy_a > noisy_b:
        return Label(a, b, strength(d), d, score_a, score_b, noisy_a, noisy_b, True)
    return Label(b, a, strength(d), d, score_b, score_a, noisy_b, noisy_a, False)


def tally(labels: Iterable[Label | None]) -> dict[str, int]:
    """How many labels of each strength (LLaMA 2's order), and how many pairs were skipped (None)."""
    counts = dict.fromkeys((*STRENGTHS, SKIPPED), 0)
    for item in labels:
        counts[SKIPPED if item is None else item.strength] += 1
    return counts
