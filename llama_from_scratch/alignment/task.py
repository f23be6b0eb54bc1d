"""The alignment task's fixed parts: the request, the topics (training and held out) and the lexicon.

Both word lists are read at run time from the book's data folder (`alignment/topics.json`,
`alignment/lexicon.json`, see `datafiles.BOOK_FILES`) and cached. A held-out topic is for
measurement only: `check_training_topic` refuses it, and also refuses a topic that counts some of
the same words as a held-out one ("dogs" counts "dogs", which the held-out "dog" counts too).
Not handled: topics of more than one word (the true score matches single words only).

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from llama_from_scratch import datafiles
from llama_from_scratch.alignment.errors import AlignmentError

REQUEST = "Write a story about a {topic}."
TOPIC_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Topics:
    train: tuple[str, ...]  # may be used for anything
    heldout: tuple[str, ...]  # measurement only


@dataclass(frozen=True)
class Lexicon:
    positive: frozenset[str]
    negative: frozenset[str]


def request(topic: str) -> str:
    """The user message for a topic, exactly as the task defines it (before the chat format)."""
    return REQUEST.format(topic=check_topic(topic))


def check_topic(topic: object) -> str:
    """The topic itself when the true score can match it: one word of lowercase ASCII letters.

    Anything else ("Dog", "teddy bear", "") could never equal a word of an answer (words are
    lowercased runs of letters), so its topic term would be 0 whatever the answer: refused.
    """
    if not isinstance(topic, str) or not topic:
        raise AlignmentError(f"the topic must be a non-empty string, got {topic!r}")
    if not TOPIC_WORD.fullmatch(topic):
        raise AlignmentError(f"the topic {topic!r} is not one word of lowercase ASCII letters (a-z): the "
                             "true score compares it with lowercased runs of letters, so it could never "
                             "match; give one lowercase word such as 'dog'")
    return topic


def topic_forms(topic: str) -> frozenset[str]:
    """The words that count as naming the topic t: t, t + "s", t + "es", and when t ends in "y",
    t without its "y" + "ies" ("teddy": "teddies")."""
    forms = {topic, topic + "s", topic + "es"}
    if topic.endswith("y"):
        forms.add(topic[:-1] + "ies")
    return frozenset(forms)


def _read(name: str) -> dict:
    with open(datafiles.path(name), encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def load_topics() -> Topics:
    """`alignment/topics.json`: the training topics and the held-out ones."""
    raw = _read("alignment/topics.json")
    topics = Topics(tuple(raw["train"]), tuple(raw["heldout"]))
    for topic in (*topics.train, *topics.heldout):
        check_topic(topic)
    return topics


@functools.cache
def load_lexicon() -> Lexicon:
    """`alignment/lexicon.json`: the words that count as positive and as negative."""
    raw = _read("alignment/lexicon.json")
    lexicon = Lexicon(frozenset(raw["positive"]), frozenset(raw["negative"]))
    for word in lexicon.positive | lexicon.negative:
        check_topic(word)  # the same rule: a lexicon word must be able to equal a word of an answer
    return lexicon


def check_training_topic(topic: str) -> str:
    """The topic itself when training data, RL prompts or preference pairs may use it.

    Raises AlignmentError for a held-out topic, or for one that counts a word a held-out topic
    counts (e.g. "dogs" or "doge" against "dog"): held-out topics are for measurement only.
    """
    forms = topic_forms(check_topic(topic))
    for held in load_topics().heldout:
        shared = forms & topic_forms(held)
        if shared:
            what = "is held out" if topic == held else \
                f"counts {'/'.join(sorted(shared))}, as the held-out topic {held!r} does"
            raise AlignmentError(f"the topic {topic!r} {what}: held-out topics are for measurement only, never "
                                 f"for training data; pick another, e.g. {', '.join(load_topics().train[:6])}")
    return topic
