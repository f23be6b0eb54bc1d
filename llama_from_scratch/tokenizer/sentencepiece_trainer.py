"""A SentencePiece-style BPE trainer that writes a `.model` file sentencepiece itself can load.

Like sentencepiece's BPE trainer (bpe_model_trainer.cc), in spirit:

1. each line is a sentence: dummy prefix, spaces to "▁", cut into words (letter runs, single
   digits, symbol runs, each led by at most one "▁": "▁to", "▁be", ","), distinct words counted;
2. characters first: the most frequent characters covering `character_coverage` of all characters
   become pieces; rarer ones are left to byte fallback (the 256 pieces <0x00>..<0xFF>) and no merge
   ever touches them or a byte piece;
3. merges: the most frequent adjacent pair of pieces inside a word becomes a new piece, score -k
   for the k-th merge (ties: the smallest pair of strings). Single characters come after the merges
   with lower scores, because the encoder never needs their score: a character is never made by a merge.

Vocabulary layout, as in LLaMA 2's tokenizer: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF>=3..258, merged
pieces, characters. The normalizer is "identity" (no NFKC), with the dummy prefix, spaces kept.

Not the same merges as sentencepiece's own trainer (which also splits by Unicode script and
numbers, and counts differently); the point is the file format and the encoder, which agree exactly.

Chapter: tokenizer.
"""

from __future__ import annotations

import re
from collections import Counter

from .bpe_fast import merges_incremental
from .sentencepiece_bpe import SPACE
from .sentencepiece_model import ModelProto, Piece, PieceType, bpe_model_proto

META = [Piece("<unk>", 0.0, PieceType.UNKNOWN), Piece("<s>", 0.0, PieceType.CONTROL),
        Piece("</s>", 0.0, PieceType.CONTROL)]
# A word: a run of letters, one digit (LLaMA splits digits), underscores, or other symbols, each
# optionally led by one "▁"; or a lone "▁". (sentencepiece splits by Unicode script much the same.)
WORD_PATTERN = re.compile(rf"{SPACE}?(?:[^\W\d_]+|\d|_+|[^\w{SPACE}]+)|{SPACE}")
BYTES = [Piece(f"<0x{b:02X}>", 0.0, PieceType.BYTE) for b in range(256)]


def count_words(text: str) -> Counter:
    """Distinct "▁"-led words of every non-empty line, with their counts."""
    words: Counter = Counter()
    for line in text.split("\n"):
        if line:
            words.update(WORD_PATTERN.findall(SPACE + line.replace(" ", SPACE)))
    return words


def keep_characters(words: Counter, character_coverage: float) -> list[str]:
    """The most frequent characters covering that fraction of all characters, most frequent first."""
    chars: Counter = Counter()
    for word, n in words.items():
        for c in word:
            chars[c] += n
    ranked = sorted(chars, key=lambda c: (-chars[c], c))
    total, covered, kept = sum(chars.values()), 0, []
    for c in ranked:
        if covered >= character_coverage * total:
            break
        kept.append(c)
        covered += chars[c]
    return kept


def train(text: str, vocab_size: int, character_coverage: float = 1.0) -> ModelProto:
    """Train on `text` (one sentence per line) and return the model; save it with `write_model`."""
    words = count_words(text)
    chars = keep_characters(words, character_coverage)
    budget = vocab_size - len(META) - len(BYTES) - len(chars)
    if budget < 0:
        raise ValueError(
            f"vocab_size {vocab_size} is too small: {len(META) + len(BYTES)} special and byte pieces "
            f"plus {len(chars)} characters already need {len(META) + len(BYTES) + len(chars)}; "
            "raise vocab_size or lower character_coverage"
        )
    # A rare character is byte fallback: cut words there, so no merge can include it.
    rare = re.compile("[^" + re.escape("".join(chars)) + "]+") if chars else None
    segments: Counter = Counter()
    for word, n in words.items():
        for seg in rare.split(word) if rare else []:
            if len(seg) > 1:
                segments[tuple(seg)] += n
    merged: list[str] = []
    seen = set(chars)
    if budget:
        for _pair, new in merges_incremental(segments, lambda a, b: a + b):
            if new not in seen:  # "a"+"bc" and "ab"+"c" make the same piece: keep it once
                seen.add(new)
                merged.append(new)
                if len(merged) == budget:
                    break
    pieces = [Piece(p, -float(k)) for k, p in enumerate(merged)]
    pieces += [Piece(c, -float(len(merged) + k)) for k, c in enumerate(chars)]
    return bpe_model_proto(META + BYTES + pieces)
