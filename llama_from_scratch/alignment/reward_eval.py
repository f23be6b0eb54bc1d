"""How good a reward model is, measured on held-out pairs and against the true score.

    pairwise accuracy   the share of pairs whose chosen answer gets the higher reward (a tie
                        counts as wrong), overall and by the labeler's strength: LLaMA 2's
                        Tables 7 and 8 (Meta's models reach about 64% overall, and most on
                        "significantly better" pairs, least on "negligibly better / unsure")
    correlation         the reward against the true score of the same answers: Pearson (linear)
                        and Spearman (Pearson of the ranks, ties given their mean rank). The
                        labeler's noise caps what the pairs can teach, but not this: the true
                        score is the "human's" hidden taste itself
    calibration         reward differences r_A - r_B (A: the first answer sampled) in bins,
                        against how often the labeler chose A in each bin; a Bradley-Terry model
                        says that rate is sigmoid(r_A - r_B) (the curve to plot beside it)

Accuracy by strength is None for a strength with no pairs. Not handled: confidence intervals
(the chapter shows several seeds instead).

Chapter: reward_model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.labeler import STRENGTHS


def _vector(x: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {x.shape}")
    return x


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float],
                      strengths: Sequence[str]) -> dict:
    """{"accuracy", "accuracy_by_strength": {strength: accuracy or None}, "pairs_by_strength"}.

    chosen, rejected: the rewards of each pair's chosen and rejected answer, `(pairs,)`.
    """
    chosen, rejected = _vector(chosen, "chosen"), _vector(rejected, "rejected")
    if not len(chosen) == len(rejected) == len(strengths) or not len(chosen):
        raise ValueError(f"need as many chosen, rejected and strengths (at least one), got "
                         f"{len(chosen)}, {len(rejected)} and {len(strengths)}")
    unknown = sorted(set(strengths) - set(STRENGTHS))
    if unknown:
        raise AlignmentError(f"unknown preference strength(s) {unknown}: the labeler's are {list(STRENGTHS)}")
    right = chosen > rejected  # (pairs,)
    kinds = np.asarray(strengths, dtype=object)
    by = {s: (float(right[kinds == s].mean()) if (kinds == s).any() else None) for s in STRENGTHS}
    return {"accuracy": float(right.mean()), "accuracy_by_strength": by,
            "pairs_by_strength": {s: int((kinds == s).sum()) for s in STRENGTHS}}


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks of `x`, ties given the mean of the ranks they span (as scipy's rankdata)."""
    x = _vector(x, "x")
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])  # first index of each run of ties
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2  # mean of ranks starts+1 .. ends
    out = np.empty(len(x))
    out[order] = np.repeat(mean_rank, ends - starts)
    return out


def correlation(rewards: Sequence[float], true_scores: Sequence[float]) -> dict[str, float]:
    """{"pearson", "spearman"} between rewards and true scores of the same answers `(answers,)`.

    ValueError for fewer than 2 answers or a constant input (no correlation is defined).
    """
    a, b = _vector(rewards, "rewards"), _vector(true_scores, "true_scores")
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"need two equally long inputs of at least 2 values, got {len(a)} and {len(b)}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        raise ValueError("a constant input has no correlation: every reward (or true score) is the same")
    return {"pearson": float(np.corrcoef(a, b)[0, 1]), "spearman": float(np.corrcoef(ranks(a), ranks(b))[0, 1])}


def calibration(diff: Sequence[float], chose_a: Sequence[bool], bins: int = 10) -> dict[str, np.ndarray]:
    """What a calibration plot needs, with `bins` bins of equal count over diff = r_A - r_B.

    Returns float64 arrays, one value per non-empty bin: "edges" `(bins + 1,)` (the quantiles),
    "mean_diff" (the bin's mean r_A - r_B), "chose_a" (the rate the labeler chose A),
    "predicted" (sigmoid of mean_diff: Bradley-Terry's rate) and "count".
    """
    diff, chosen = _vector(diff, "diff"), np.asarray(chose_a, dtype=bool)
    if len(diff) != len(chosen) or not len(diff) or type(bins) is not int or bins < 1:
        raise ValueError(f"need as many differences as choices (at least one) and bins >= 1, got {len(diff)}, "
                         f"{len(chosen)} and {bins!r}")
    edges = np.quantile(diff, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, diff, side="right") - 1, 0, bins - 1)  # (pairs,)
    keep = [k for k in range(bins) if (which == k).any()]
    mean_diff = np.array([diff[which == k].mean() for k in keep])
    return {"edges": edges, "mean_diff": mean_diff, "chose_a": np.array([chosen[which == k].mean() for k in keep]),
            "predicted": 1 / (1 + np.exp(-mean_diff)), "count": np.array([(which == k).sum() for k in keep],
                                                                         dtype=np.float64)}
