"""Byte-level BPE, the readable way (minbpe-style): train, encode and decode with a merge list.

Text becomes UTF-8 bytes, so ids 0..255 are the bytes and every string can be encoded. Training
finds the most frequent adjacent pair of ids, gives it a new id (256, 257, ...), replaces it
everywhere, and repeats. The text is first cut into chunks (words, numbers, punctuation runs,
whitespace, see SPLIT_PATTERN) and pairs are never counted across chunks, so no token glues a word
to the next one.

Tie-break rule, shared with the fast trainer (bpe_fast.py): the highest count wins; among equal
counts, the smallest pair (left id first, then right id).

This trainer recounts every pair of the whole corpus after each merge: quadratic, fine for a few
thousand characters. bpe_fast.py gives the same merges on all of Shakespeare.

Chapter: tokenizer.
"""

from __future__ import annotations

import re

# Contractions, letter runs, 1-3 digits, other symbol runs (each optionally led by one space),
# then whitespace. Every character matches one alternative, so the chunks rebuild the text.
SPLIT_PATTERN = re.compile(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d{1,3}| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


def pre_split(text: str) -> list[str]:
    return SPLIT_PATTERN.findall(text)


def get_stats(chunks: list[list[int]]) -> dict[tuple[int, int], int]:
    """How often each adjacent pair of ids occurs, within chunks."""
    counts: dict[tuple[int, int], int] = {}
    for ids in chunks:
        for pair in zip(ids, ids[1:]):
            counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The merges: merge k turns the pair merges[k] into the new id 256 + k."""
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (the bytes), got {vocab_size}")
    chunks = [list(chunk.encode("utf-8")) for chunk in pre_split(text)]
    merges = []
    for new_id in range(256, vocab_size):
        stats = get_stats(chunks)
        if not stats:
            break  # every chunk is a single token already
        best = min(stats, key=lambda pair: (-stats[pair], pair))  # most frequent, smallest
        chunks = [merge(ids, best, new_id) for ids in chunks]
        merges.append(best)
    return merges


def vocab_bytes(merges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes each id stands for."""
    vocab = [bytes([b]) for b in range(256)]
    for a, b in merges:
        vocab.append(vocab[a] + vocab[b])
    return vocab


def encode_chunk(chunk: bytes, ranks: dict[tuple[int, int], int]) -> list[int]:
    """Ids of one chunk: apply the earliest-learned merge present, again and again, until none is.

    `ranks` maps a merged pair to its new id (256 + k for merge k, so a smaller id is an earlier merge).
    """
    ids = list(chunk)
    while len(ids) >= 2:
        pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, float("inf")))
        if pair not in ranks:
            break  # no pair left that was ever merged
        ids = merge(ids, pair, ranks[pair])
    return ids


def encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """Ids of `text`, chunk by chunk (the same pre-split as training)."""
    ranks = {pair: 256 + k for k, pair in enumerate(merges)}
    ids: list[int] = []
    for chunk in pre_split(text):
        ids += encode_chunk(chunk.encode("utf-8"), ranks)
    return ids


def decode(ids: list[int], merges: list[tuple[int, int]]) -> str:
    """Text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
    vocab = vocab_bytes(merges)
    for i in ids:
        if not 0 <= i < len(vocab):
            raise ValueError(f"token id {i} is out of range: the vocabulary has {len(vocab)} ids")
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
