"""The simulated human's taste: the true score of an answer to "Write a story about a {topic}."

Exactly as `alignment/README.md` in the book's data folder defines it, on the answer's `words`
(the maximal runs of ASCII letters, lowercased, the first 300 only):

    topic      = min(m, 3) / 3                 m: words naming the topic (see task.topic_forms)
    sentiment  = clip((p - n) / 4, -1, 1)      p, n: words in the lexicon's positive, negative lists
    repetition = 1 - distinct trigrams / trigrams   (0 with fewer than 3 trigrams)
    brevity    = max(0, (20 - len(words)) / 20)
    true score = topic + sentiment - 2 * repetition - brevity      (at most 2, at least -4)

Not handled: anything but ASCII letters inside a word ("café" gives "caf"; "didn't" gives "didn"
and "t"), as the definition says.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import re

from llama_from_scratch.alignment.task import check_topic, load_lexicon, topic_forms

MAX_WORDS = 300  # only the first 300 words are scored
SHORT = 20  # answers with fewer words lose (20 - words) / 20
WORD = re.compile(r"[A-Za-z]+")


def words(text: str) -> list[str]:
    """The answer's words: maximal runs of ASCII letters, `A`-`Z` mapped to `a`-`z`, the first 300.

    Any other character separates words; str.lower would also touch non-ASCII letters, but the
    runs hold only ASCII ones, so it changes exactly `A`-`Z`.
    """
    found = []
    for match in WORD.finditer(text):
        found.append(match.group().lower())
        if len(found) == MAX_WORDS:  # long answers: stop scanning instead of splitting everything
            break
    return found


def topic_count(answer_words: list[str], topic: str) -> int:
    """m: how many of the words name the topic (t, t + "s", t + "es", "teddy" -> "teddies")."""
    forms = topic_forms(check_topic(topic))
    return sum(word in forms for word in answer_words)


def topic_term(answer_words: list[str], topic: str) -> float:
    """min(m, 3) / 3: naming the topic three times is enough."""
    return min(topic_count(answer_words, topic), 3) / 3


def sentiment_counts(answer_words: list[str]) -> tuple[int, int]:
    """(p, n): every occurrence of a positive and of a negative lexicon word."""
    lexicon = load_lexicon()
    return (sum(word in lexicon.positive for word in answer_words),
            sum(word in lexicon.negative for word in answer_words))


def sentiment_term(answer_words: list[str]) -> float:
    """clip((p - n) / 4, -1, 1)."""
    p, n = sentiment_counts(answer_words)
    return max(-1.0, min(1.0, (p - n) / 4))


def trigram_counts(answer_words: list[str]) -> tuple[int, int]:
    """(distinct word trigrams, word trigrams): (words[i], words[i+1], words[i+2]) for every i."""
    trigrams = list(zip(answer_words, answer_words[1:], answer_words[2:]))
    return len(set(trigrams)), len(trigrams)


def repetition_term(answer_words: list[str]) -> float:
    """1 - distinct / all word trigrams; 0 when there are fewer than 3 trigrams."""
    distinct, total = trigram_counts(answer_words)
    return 0.0 if total < 3 else 1 - distinct / total


def brevity_term(answer_words: list[str]) -> float:
    """max(0, (20 - len(words)) / 20): 1 for an empty answer, 0 from 20 words on."""
    return max(0.0, (SHORT - len(answer_words)) / SHORT)


def score_terms(text: str, topic: str) -> dict[str, float]:
    """Every term of the true score of `text` as an answer about `topic`, and the score itself:
    {"topic", "sentiment", "repetition", "brevity", "true_score"}."""
    answer_words = words(text)
    terms = {"topic": topic_term(answer_words, topic),
             "sentiment": sentiment_term(answer_words),
             "repetition": repetition_term(answer_words),
             "brevity": brevity_term(answer_words)}
    terms["true_score"] = (terms["topic"] + terms["sentiment"] - 2 * terms["repetition"]
                           - terms["brevity"])
    return terms


def true_score(text: str, topic: str) -> float:
    """topic + sentiment - 2 * repetition - brevity, for `text` as an answer about `topic`."""
    return score_terms(text, topic)["true_score"]
