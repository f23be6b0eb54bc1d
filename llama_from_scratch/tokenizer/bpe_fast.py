"""Fast BPE training: count each distinct word once, then update pair counts incrementally.

The readable trainer (bpe_basic.py) recounts every pair of the whole corpus after each merge.
Here the corpus is first reduced to its distinct pre-split words with their counts ("the" occurs
thousands of times but is processed once per merge at most), and after a merge only the words
that contain the merged pair are touched: `where[pair]` is the index of those words, and the pair
counts change by the difference between the word's pairs before and after the merge.

Tie-break rule (shared with bpe_basic.py so both give identical merges): the pair with the highest
count wins; among equal counts, the smallest pair (compared as a tuple: by left symbol, then right).

The best pair is found with a max-heap of (-count, pair) entries. A count that grows (only pairs
holding the new symbol can grow) is pushed again; an entry whose count has fallen is re-pushed with
its current count when popped (lazy update). So every pair has an entry at least as high as its
count, and a popped entry whose count is current is the true best pair.

Chapter: tokenizer.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator

from .bpe_basic import encode_chunk, pre_split

Symbol = Hashable
Pair = tuple[Symbol, Symbol]


def merge_word(word: tuple, pair: Pair, new: Symbol) -> tuple:
    """Replace every non-overlapping occurrence of `pair`, left to right."""
    if len(word) == 2:
        return (new,) if word == pair else word
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def merges_incremental(
    word_counts: dict[tuple, int], new_symbol: Callable[[Symbol, Symbol], Symbol]
) -> Iterator[tuple[Pair, Symbol]]:
    """Yield (pair, new symbol) merges, best first, while some pair occurs; stop anytime.

    `word_counts` maps each distinct word (a tuple of symbols) to how often it occurs.
    `new_symbol(a, b)` names the merged symbol (a fresh id for byte-level BPE; the concatenated
    string for SentencePiece-style pieces). Symbols must be comparable for the tie-break.
    """
    words = [tuple(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_count: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, (word, n) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            pair_count[pair] += n
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]
    heapq.heapify(heap)
    while heap:
        neg, pair = heapq.heappop(heap)
        current = pair_count.get(pair, 0)
        if current != -neg:
            if 0 < current < -neg:
                heapq.heappush(heap, (-current, pair))  # lazy update of a count that fell
            continue
        new = new_symbol(*pair)
        yield pair, new
        for w in where.pop(pair):
            word, n = words[w], counts[w]
            merged = merge_word(word, pair, new)
            if len(merged) == len(word):
                continue  # the index is lazy too: this word lost the pair in an earlier merge
            for p in zip(word, word[1:]):
                pair_count[p] -= n
            for p in zip(merged, merged[1:]):
                pair_count[p] += n
            # Only pairs holding the new symbol can have grown: index and push those.
            for p in zip(merged, merged[1:]):
                if p[0] == new or p[1] == new:
                    where[p].add(w)
                    heapq.heappush(heap, (-pair_count[p], p))
            words[w] = merged
        pair_count.pop(pair, None)


def train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """Byte-level BPE merges, `vocab_size - 256` of them (fewer if the text runs out of pairs).

    Merge k creates token id 256 + k from the pair of ids it returns at index k.
    """
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the bytes), got {vocab_size}")
    word_counts = Counter(tuple(chunk.encode("utf-8")) for chunk in pre_split(text))
    merges = []
    for pair, _ in merges_incremental(word_counts, lambda a, b: 256 + len(merges)):
        merges.append(pair)
        if len(merges) == vocab_size - 256:
            break
    return merges


def encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """The same ids as bpe_basic.encode, but each distinct chunk is encoded only once."""
    ranks = {pair: 256 + k for k, pair in enumerate(merges)}
    cache: dict[str, list[int]] = {}
    ids: list[int] = []
    for chunk in pre_split(text):
        if chunk not in cache:
            cache[chunk] = encode_chunk(chunk.encode("utf-8"), ranks)
        ids += cache[chunk]
    return ids
