"""Self-instruct: supervised fine-tuning data made from the base model's own stories, no outside data.

    1. sample   stories from BOS alone (unconditioned), temperature 1.0, top-p 1.0, until EOS or
                BOS (stories260K ends a story by starting the next one) or `max_new_tokens` (256);
    2. relabel  each with the topic it names most often (`true_score.topic_count`) among the
                candidate topics, if that is at least `min_mentions` (3) times (ties: the topic
                listed first), and only if it is also named within its first `early_words` (25)
                words;
    3. filter   by the true score of the story as an answer to "Write a story about a {topic}.":
                keep it when the score is at least `min_score` (1.0).

The example is then (topic, story): the request the story happens to answer. The candidate
topics (`training_topics()`) are topics.json's training list and STORY_NOUNS, the concrete nouns
stories260K writes most often after "the", "a", "his" or "her" (counted on 1,024 of its stories);
held-out topics and their look-alikes are left out, and every candidate passes
`task.check_training_topic` (an AlignmentError otherwise), so a held-out topic can never be a
label. A story may still mention a held-out word in passing; it is the base model's own text,
and only its label is a topic.

Why these choices: measured by SFT on the data (sft.py's settings) and the mean `topic` term of
256 answers to the 8 held-out topics, one seed each, base 0.116 (standard error of a run's mean
about 0.03, so differences under about 0.05 are noise):

    candidates        stories  filter                     examples  steps   topic  (x base)
    24 train topics     2,000  3 mentions                    ~370     300   0.315   2.7
    24 train topics     4,000  3 mentions                    ~730     300   0.305   2.6
    24 train topics     4,000  3 mentions                    ~730     600   0.352   3.0
    + STORY_NOUNS       4,000  3 mentions                  ~1,000     300   0.337   2.9
    + STORY_NOUNS       4,000  3 mentions                  ~1,000     600   0.368   3.2
    + STORY_NOUNS       4,000  3 mentions, one in first 25    484     600   0.357   3.1
    + STORY_NOUNS       8,000  3 mentions, one in first 25  1,010     600   0.392   3.4  (defaults)

Many topic words teach "name the word you were asked about" rather than 24 particular words; a
mention early in the story teaches naming it while the request is a few tokens back; more
stories keep 600 steps from becoming 30 epochs of a few hundred examples. `min_mentions` 3 makes
the topic the story's subject (with 2 there are twice the examples, and the topic term rose less:
0.26 against 0.31 in an earlier trial). `min_score` 1.0: such a story already has a topic term
of 1, so 1.0 asks that its sentiment at least make up for any repetition or shortness, which
drops loops and sad or very short stories, in the spirit of LLaMA 2 keeping only high-quality SFT
data ("Quality Is All You Need", section 3.1). Some words stay hard for a model this small: after
SFT (seed 0) the mean topic term for "bed" is 0.05 and for "garden" 0.18, against 0.3-0.7 for the
other held-out topics (experiments/results/alignment/sft.json).

Stories are sampled with the budget of measurement, 256 new tokens, so a story is judged on as
much text as an answer is when measured. Most stories are longer (about 88% of stories260K's go
on past 256 tokens): such a story is kept with `ended` False, and SFT learns it without an EOS
(`sft.encode_examples`), since learning an EOS there would teach the model to stop mid-sentence;
a story that ended (EOS or BOS) is learned with its EOS.

Determinism: batch b of stories is drawn from a generator seeded with `sampler.line_seed(seed,
b)`; the stories depend on the seed and the batch size (a batch shares one generator), not on
anything else. Empty stories and exact duplicates are dropped and counted. Not handled: a
story naming two topics equally often gets only the one listed first; multi-word topics.

Chapter: instruction_tuning.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from llama_from_scratch.alignment.errors import AlignmentError, require_ints
from llama_from_scratch.alignment.sampler import MAX_NEW_TOKENS, line_seed
from llama_from_scratch.alignment.task import check_training_topic, load_topics
from llama_from_scratch.alignment.true_score import topic_count, true_score, words
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

# In the order they are checked; "no_topic": no candidate named `min_mentions` times, early enough.
DROPS = ("empty", "duplicate", "no_topic", "low_score")
STORY_NOUNS = (
    "toy", "cat", "house", "box", "room", "car", "man", "rock", "sky", "water", "girl", "boy", "store", "bug",
    "forest", "kitchen", "book", "window", "bear", "food", "floor", "truck", "hole", "picture", "rain", "slide",
    "bunny", "door", "woods", "wind", "table", "grass", "puppy", "pond", "butterfly", "squirrel", "bag", "crab",
    "yard", "ice", "monkey", "lady", "lake", "flower", "teddy", "bowl", "road", "street", "doll", "fox",
    "backyard", "cake", "party", "wall", "frog", "beach", "hat", "zoo", "dress", "star", "chair", "mouse",
    "town", "bike", "roof", "sea", "game", "doctor", "cow", "jungle", "pocket", "apple", "river", "leaf",
    "fairy", "field", "hill", "treasure", "ladder", "swing", "stick", "cheese", "worm", "king", "tower", "sand",
    "stone", "vase", "prince", "bus", "train", "mud", "cup", "duck", "park", "tree", "ball")


@dataclass(frozen=True)
class SelfInstructSettings:
    stories: int = 8000  # stories sampled (before any is dropped)
    min_mentions: int = 3  # the label must be named at least this often
    early_words: int = 25  # ... and at least once within the story's first this many words (0: anywhere)
    min_score: float = 1.0  # keep a story whose true score for its label is at least this
    max_new_tokens: int = MAX_NEW_TOKENS  # 256, as in measurement; a longer story is cut (ended False)
    batch_size: int = 64  # stories sampled together (the stories depend on it)
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("stories", "min_mentions", "max_new_tokens", "batch_size"))
        require_ints(self, ("seed",), minimum=0)
        if type(self.early_words) is not int or self.early_words < 0:
            raise AlignmentError(f"early_words must be an integer >= 0 (0: anywhere), got {self.early_words!r}")


@dataclass
class SelfInstructData:
    examples: list[dict]  # {"topic", "response", "ended", "mentions", "true_score"}, in sampling order
    counts: dict[str, int]  # "sampled", every drop reason (DROPS) and "kept"
    by_topic: dict[str, int]  # kept examples per topic, most first
    settings: SelfInstructSettings
    topics: tuple[str, ...] = field(default=())  # the topics a story could be labelled with

    def summary(self) -> dict:
        """What a run's JSON records: the settings, the candidate topics and every count."""
        return {"settings": asdict(self.settings), "topics": list(self.topics), "counts": self.counts,
                "by_topic": self.by_topic}


def training_topics(topics: Sequence[str] | None = None) -> tuple[str, ...]:
    """`topics` (default: topics.json's training list, then STORY_NOUNS not already in it), each
    checked to be allowed in training."""
    chosen = tuple(dict.fromkeys(load_topics().train + STORY_NOUNS)) if topics is None else tuple(topics)
    if not chosen:
        raise AlignmentError("no topics given: self-instruct needs at least one training topic to label with")
    return tuple(check_training_topic(t) for t in chosen)


def relabel(story: str, topics: Sequence[str], min_mentions: int,
            early_words: int = 0) -> tuple[str, int] | None:
    """(the topic the story names most, how often) among `topics`, or None when none reaches
    `min_mentions`, or when that topic is not named within the first `early_words` words (0:
    anywhere). Ties go to the topic listed first. `topics` must already be checked."""
    story_words = words(story)
    best, most = None, 0
    for topic in topics:
        m = topic_count(story_words, topic)
        if m > most:
            best, most = topic, m
    if best is None or most < min_mentions:
        return None
    if early_words and topic_count(story_words[:early_words], best) == 0:
        return None
    return best, most


def sample_stories(model: Transformer, tokenizer: Tokenizer, n: int, seed: int, max_new_tokens: int,
                   batch_size: int = 64, progress: bool = False) -> list[tuple[str, bool]]:
    """`n` stories from BOS alone, as (text, ended): ended when it stopped at EOS or BOS within
    `max_new_tokens` tokens (else it is cut there). Batch b is seeded with `line_seed(seed, b)`."""
    from tqdm.auto import tqdm

    limit = model.args.max_seq_len - 1  # BOS takes one position
    stories = []
    batches = range((n + batch_size - 1) // batch_size)
    for b in tqdm(batches, desc="sampling stories", unit="batch", file=sys.stderr, disable=not progress):
        size = min(batch_size, n - b * batch_size)
        # One token more than allowed: a story that uses it did not end within max_new_tokens.
        out = generate(model, [[tokenizer.bos_id]] * size, max_new_tokens + 1, temperature=1.0, top_k=None,
                       top_p=1.0, stop_ids=tokenizer.stop_ids, seed=line_seed(seed, b))
        stories += [(tokenizer.decode(ids[:max_new_tokens]), len(ids) <= max_new_tokens and len(ids) < limit)
                    for ids in out]
    return stories


def self_instruct(model: Transformer, tokenizer: Tokenizer, settings: SelfInstructSettings = SelfInstructSettings(),
                  topics: Sequence[str] | None = None, progress: bool = False) -> SelfInstructData:
    """Sample, relabel and filter (see the module docstring); the kept examples and why the rest went.

    `topics` defaults to the training topics; a held-out one raises AlignmentError before any
    sampling.
    """
    allowed = training_topics(topics)
    counts = Counter({"sampled": 0, **dict.fromkeys(DROPS, 0), "kept": 0})
    examples, seen = [], set()
    for text, ended in sample_stories(model, tokenizer, settings.stories, settings.seed,
                                      settings.max_new_tokens, settings.batch_size, progress):
        counts["sampled"] += 1
        label = relabel(text, allowed, settings.min_mentions, settings.early_words)
        score = true_score(text, label[0]) if label else None
        reason = ("empty" if not text.strip() else "duplicate" if text in seen else
                  "no_topic" if label is None else "low_score" if score < settings.min_score else None)
        seen.add(text)
        if reason:
            counts[reason] += 1
            continue
        counts["kept"] += 1
        examples.append({"topic": label[0], "response": text, "ended": ended, "mentions": label[1],
                         "true_score": score})
    by_topic = dict(Counter(e["topic"] for e in examples).most_common())
    return SelfInstructData(examples, dict(counts), by_topic, settings, allowed)
