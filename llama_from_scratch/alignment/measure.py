"""Measuring a policy by the true score: answers to requests it was never trained on.

    requests   `requests(topics, per_topic)`: each topic `per_topic` times, topic after topic
               (["dog", "bird", ..., "dog", "bird", ...]), as lines of an `align sample` file;
    answers    `answer_rows`: exactly what `align sample` writes for those lines (sampler.py:
               temperature 1.0, top-p 1.0, 256 new tokens, line i drawn with line_seed(seed, i)),
               so a measurement here and one by the CLI give the same answers;
    summary    `summarize`: the means the chapters compare, base against SFT (and later RLHF).

    summary key      what it is
    answers          how many answers
    topic            mean of the true score's `topic` term, min(m, 3) / 3
    topic_rate       the share of answers that name their topic at least once (m >= 1)
    sentiment        mean `sentiment` term; `repetition` and `brevity` likewise
    true_score       mean true score; `true_score_sd` its standard deviation over answers and
                     `true_score_se` the standard error of the mean (sd / sqrt(answers))
    by_topic         {topic: {"topic", "topic_rate", "true_score"}} per topic

Not handled: several samples per line (use more lines), any temperature but the task's own
when measuring (pass another to `answer_rows` only to explore).

Chapter: instruction_tuning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.sampler import MAX_NEW_TOKENS, TEMPERATURE, TOP_P, sample_rows
from llama_from_scratch.alignment.task import check_topic
from llama_from_scratch.alignment.true_score import score_terms, topic_count, words
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

TERMS = ("topic", "sentiment", "repetition", "brevity", "true_score")


def requests(topics: Sequence[str], per_topic: int) -> list[str]:
    """Each topic `per_topic` times, cycling through the topics (topic order kept)."""
    if type(per_topic) is not int or per_topic < 1 or not topics:
        raise AlignmentError(f"need at least one topic and per_topic >= 1, got {len(topics)} and {per_topic!r}")
    return [check_topic(t) for _ in range(per_topic) for t in topics]


def answer_rows(model: Transformer, tokenizer: Tokenizer, topics: Sequence[str], seed: int,
                temperature: float = TEMPERATURE, top_p: float = TOP_P, max_new_tokens: int = MAX_NEW_TOKENS,
                progress: bool = False) -> list[dict]:
    """{"topic", "prompt", "response", "mentions" (m), "terms": the true score's terms} per line."""
    return [scored_row(row) for row in sample_rows(model, tokenizer, topics, seed, temperature, top_p,
                                                   max_new_tokens, progress)]


def scored_row(row: dict) -> dict:
    """`row` ({"topic", "response", ...}) with "mentions" (m) and "terms" (the true score's terms)."""
    return {**row, "mentions": topic_count(words(row["response"]), row["topic"]),
            "terms": score_terms(row["response"], row["topic"])}


def _means(rows: Sequence[dict]) -> dict[str, float]:
    out = {k: float(np.mean([r["terms"][k] for r in rows])) for k in TERMS}
    out["topic_rate"] = float(np.mean([r["mentions"] >= 1 for r in rows]))
    return out


def summarize(rows: Sequence[dict]) -> dict:
    """The table above for answers from `answer_rows` (each needs "topic", "mentions", "terms")."""
    if not rows:
        raise AlignmentError("there are no answers to summarize")
    scores = np.array([r["terms"]["true_score"] for r in rows], dtype=np.float64)
    sd = float(scores.std(ddof=1)) if len(rows) > 1 else 0.0
    out = {"answers": len(rows), **_means(rows), "true_score_sd": sd, "true_score_se": sd / math.sqrt(len(rows))}
    by_topic = {}
    for topic in dict.fromkeys(r["topic"] for r in rows):
        means = _means([r for r in rows if r["topic"] == topic])
        by_topic[topic] = {k: means[k] for k in ("topic", "topic_rate", "true_score")}
    out["by_topic"] = by_topic
    return out
