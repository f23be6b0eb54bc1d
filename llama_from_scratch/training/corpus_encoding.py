"""A whole corpus to token ids, fast and exactly as `tokenizer.encode(text)`; a tokenizer's identity.

Why not one `encode(text)` call: llama2.c's encoder (run.c's, see tokenizer/llama2c.py) rescans
all its tokens after every merge, so it is quadratic in the length of what it is given (hours for
tinyshakespeare), and a progress bar needs steps. So the text is cut into segments at boundaries
no merge can cross, and the segments' ids are concatenated.

The boundary: a single space between two characters that are not spaces (nor "▁"), as in
"to| be". If no token holds a non-space followed by a space (checked on the vocabulary: true of
LLaMA 2's, llama2.c's and our trainer's), a merge never joins what lies left and right of that
point. The segment right of it, " be, or...", becomes the tokenizer's dummy-prefix space plus
"be, or...", and the dummy prefix is exactly the token a space becomes: so its ids are
`encode("be, or...")`. With SentencePiece's `remove_extra_whitespaces` nothing changes either: a
single space between non-spaces is never removed, nor is a segment's last character.

Segments: SentencePieceBPE is fast on long text (it caches word chunks itself), so its segments are
about a million characters, only for the progress bar; llama2.c's are single words (cached).
Anything else (another Tokenizer class, a vocabulary that breaks the rule, no dummy prefix,
whitespace as suffix) is encoded whole, in one call. Not handled: BOS/EOS (the caller adds them).

Chapter: pretraining.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator

from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer
from llama_from_scratch.tokenizer.sentencepiece_bpe import SPACE, SentencePieceBPE
from llama_from_scratch.tokenizer.sentencepiece_model import serialize_model

BOUNDARY = re.compile(f"(?<=[^ {SPACE}]) (?=[^ {SPACE}])")
SENTENCEPIECE_SEGMENT_CHARS = 1 << 20
MAX_CACHED_SEGMENTS = 1_000_000  # words remembered (bounded memory)
MAX_CACHED_CHARS = 64


def tokenizer_identity(tokenizer: Tokenizer) -> str:
    """sha256 (hex) of what defines `tokenizer`: its class name and its model's bytes.

    SentencePieceBPE: the serialized ModelProto (pieces, scores, types, trainer and normalizer
    settings). Llama2cTokenizer: max_token_length, then every token's score and bytes (the
    tokenizer.bin layout). Two tokenizers loaded from equal files match; any other class raises
    TypeError (its encoding cannot be fingerprinted from here).
    """
    if isinstance(tokenizer, SentencePieceBPE):
        data = serialize_model(tokenizer.model)
    elif isinstance(tokenizer, Llama2cTokenizer):
        data = struct.pack("<I", tokenizer.max_token_length) + b"".join(
            struct.pack("<fI", score, len(piece)) + piece for piece, score in zip(tokenizer.vocab, tokenizer.scores))
    else:
        raise TypeError(f"cannot fingerprint a {type(tokenizer).__name__}: the token cache knows SentencePieceBPE "
                        "(.model files) and Llama2cTokenizer (llama2.c .bin files); load one of those")
    return hashlib.sha256(type(tokenizer).__name__.encode() + b"\0" + data).hexdigest()


def segment_chars(tokenizer: Tokenizer) -> int | None:
    """The segment length to aim for with this tokenizer (1: every boundary), or None when the
    text must be encoded whole (the boundary rule does not hold for it)."""
    if isinstance(tokenizer, SentencePieceBPE):
        m = tokenizer.model
        # chunk_re exists only when no piece holds "▁" after another character (and spaces are
        # escaped, as prefixes). Without byte fallback, "▁" must be a piece: otherwise a segment's
        # first symbol could be <unk>, which encode folds into an <unk> just before it.
        fits = (tokenizer.chunk_re is not None and m.add_dummy_prefix
                and (m.byte_fallback or SPACE in tokenizer.piece_to_id))
        return SENTENCEPIECE_SEGMENT_CHARS if fits else None
    if isinstance(tokenizer, Llama2cTokenizer):
        crossing = re.compile(rb"[^ ] ")
        return None if any(crossing.search(piece) for piece in tokenizer.vocab) else 1
    return None


def segments(text: str, min_chars: int) -> Iterator[str]:
    """`text` cut at boundaries at least `min_chars` apart; joined, they give `text` back.
    Every segment but the first starts with the boundary's space and one non-space character."""
    start = 0
    for match in BOUNDARY.finditer(text):
        if match.start() - start >= min_chars:
            yield text[start:match.start()]
            start = match.start()
    yield text[start:]


def encode_corpus(text: str, tokenizer: Tokenizer, min_chars: int | None = None) -> Iterator[tuple[list[int], int]]:
    """(ids, characters covered) per segment; the ids joined equal `tokenizer.encode(text)`.

    `min_chars` overrides the segment length (tests use 1 to cut at every boundary); it is
    ignored when the text must be encoded whole.
    """
    planned = segment_chars(tokenizer)
    if planned is None:
        yield tokenizer.encode(text), len(text)
        return
    cache: dict[str, list[int]] = {}
    for k, segment in enumerate(segments(text, planned if min_chars is None else min_chars)):
        if k == 0:  # the text's own start: the dummy prefix is added there anyway
            yield tokenizer.encode(segment), len(segment)
            continue
        ids = cache.get(segment)
        if ids is None:
            ids = tokenizer.encode(segment[1:])  # its leading space = the dummy prefix
            if len(segment) <= MAX_CACHED_CHARS:  # words repeat; long segments do not
                if len(cache) >= MAX_CACHED_SEGMENTS:
                    cache.clear()
                cache[segment] = ids
        yield ids, len(segment)
