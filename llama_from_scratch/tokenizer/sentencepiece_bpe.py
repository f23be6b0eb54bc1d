"""SentencePiece's BPE model, written from scratch: the LLaMA 2 tokenizer, bit for bit.

Encoding a text, as sentencepiece does it for a BPE model with the identity normalizer:

1. normalize: nothing is changed except that a dummy prefix space is added in front and every
   space " " becomes "▁" (U+2581), so "Hello world" becomes "▁Hello▁world";
2. split into characters; then, again and again, merge the adjacent pair whose concatenation is
   a piece with the highest score (ties: the leftmost pair), until no adjacent pair is a piece;
3. look each final symbol up; one that is not a piece is spelled as its UTF-8 bytes with the
   byte pieces <0x00>..<0xFF> (byte fallback), or becomes <unk> without byte fallback.

Decoding maps ids to pieces, turns "▁" back into spaces, drops the first dummy-prefix space, turns
runs of byte pieces back into UTF-8 (an invalid byte becomes U+FFFD, one per byte, as
sentencepiece does), prints <unk> as " ⁇ " and control pieces (<s>, </s>) as nothing.

Speed: no LLaMA piece holds a "▁" after another character, and no piece holds a newline or a tab,
so a merge never crosses the start of a whitespace-led chunk like "▁the" or a newline. Encoding each
distinct chunk once and caching its ids is therefore exact (`_chunk_pattern` checks this property on
the model's pieces and falls back to encoding the text whole when it does not hold).

Not handled (a clear error at load time): normalizers other than "identity" (e.g. nmt_nfkc with its
precompiled character map), user-defined pieces. Also not handled: UNUSED pieces (treated like
normal pieces), sampling (BPE dropout), n-best encoding.

Chapter: tokenizer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from .base import Tokenizer
from .checks import TokenizerInputError, check_ids, check_text
from .sentencepiece_merge import bpe_merge
from .sentencepiece_model import ModelProto, PieceType, read_model

__all__ = ["SentencePieceBPE", "TokenizerInputError", "bpe_merge", "decode_utf8_like_sentencepiece"]

SPACE = "\u2581"  # ▁, what a space becomes
MAX_CACHE = 1_000_000  # distinct chunks remembered by `encode`


def decode_utf8_like_sentencepiece(data: bytes) -> str:
    """UTF-8 decode where each byte that does not start a valid character becomes one U+FFFD.

    Python's errors="replace" replaces a broken multi-byte sequence as a whole; sentencepiece
    (string_util::IsValidDecodeUTF8) consumes a single byte per replacement, so we do the same.
    """
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        # The lead byte tells the length: 0xxxxxxx, 110xxxxx, 1110xxxx, 11110xxx (else invalid).
        size = 1 if lead < 0x80 else 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 0
        try:
            if size == 0:
                raise UnicodeDecodeError("utf-8", data, i, i + 1, "invalid start byte")
            out.append(data[i:i + size].decode("utf-8"))  # strict: no overlong forms, no surrogates
            i += size
        except UnicodeDecodeError:
            out.append("\ufffd")
            i += 1
    return "".join(out)


class SentencePieceBPE(Tokenizer):
    """Encode and decode like `sentencepiece.SentencePieceProcessor` for a BPE `.model` file.

    `decode_continuation` is the base class's: sentencepiece decodes from the ids alone.
    """

    def __init__(self, model: ModelProto, name: str = "<model>"):
        if model.model_type != 2:
            raise ValueError(f"{name} is a SentencePiece model of type {model.model_type}, not BPE (2)")
        if model.normalizer_name != "identity" or model.precompiled_charsmap:
            raise ValueError(f"{name} uses the {model.normalizer_name!r} normalizer; only 'identity' is handled")
        if any(p.type == PieceType.USER_DEFINED for p in model.pieces):
            raise ValueError(f"{name} has user-defined pieces, which this encoder does not handle")
        self.model = model
        self.pieces = [p.piece for p in model.pieces]
        self.types = [p.type for p in model.pieces]
        # sentencepiece keeps two maps: mergeable pieces, and reserved ones (control/unknown/byte),
        # looked up first. Only the first ones can be produced by a merge.
        mergeable = (PieceType.NORMAL, PieceType.USER_DEFINED, PieceType.UNUSED)
        self.scores = {p.piece: p.score for p in model.pieces if p.type in mergeable}
        self.piece_to_id = {p.piece: i for i, p in enumerate(model.pieces) if p.type in mergeable}
        self.piece_to_id.update({p.piece: i for i, p in enumerate(model.pieces) if p.type not in mergeable})
        self.unk_id = next((i for i, t in enumerate(self.types) if t == PieceType.UNKNOWN), None)
        self.bos_id = self.piece_to_id.get(model.trainer_spec.get_str(46, "<s>"), -1)
        self.eos_id = self.piece_to_id.get(model.trainer_spec.get_str(47, "</s>"), -1)
        self.byte_ids = [self.piece_to_id.get(f"<0x{b:02X}>", -1) for b in range(256)]
        if model.byte_fallback and -1 in self.byte_ids:
            raise ValueError(f"{name} enables byte fallback but lacks some of the <0x00>..<0xFF> pieces")
        self.chunk_re = self._chunk_pattern()
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> "SentencePieceBPE":
        return cls(read_model(path), name=str(path))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    # ------------------------------------------------------------------ encode

    def normalize(self, text: str) -> str:
        """The identity normalizer: dummy prefix, " " -> "▁", optionally extra spaces removed.

        In the order of sentencepiece's normalizer.cc: leading spaces dropped and runs of
        spaces collapsed (remove_extra_whitespaces), the prefix added, spaces escaped, then
        trailing "▁" dropped (remove_extra_whitespaces; a literal "▁" at the end goes too).
        """
        if not text:
            return ""
        m = self.model
        space = SPACE if m.escape_whitespaces else " "
        if m.remove_extra_whitespaces:
            text = re.sub(" +", " ", text.lstrip(" "))
        prefix = " " if m.add_dummy_prefix and not m.treat_whitespace_as_suffix else ""
        normalized = (prefix + text).replace(" ", space)
        if m.remove_extra_whitespaces:
            normalized = normalized.rstrip(space)
        if m.add_dummy_prefix and m.treat_whitespace_as_suffix:
            normalized += space
        return normalized

    def _chunk_pattern(self) -> re.Pattern | None:
        """A regex cutting normalized text where no merge can cross, or None when unsafe."""
        m = self.model
        if m.treat_whitespace_as_suffix or not m.escape_whitespaces:
            return None
        multi = [p for p in self.scores if len(p) > 1]
        if any(re.search(f"[^{SPACE}]{SPACE}", p) for p in multi):
            return None
        # Characters no multi-character piece contains are always symbols on their own.
        alone = "".join(c for c in "\n\t\r\f\v" if not any(c in p for p in multi))
        alone_class = f"[{re.escape(alone)}]|" if alone else ""
        rest = f"[^{SPACE}{re.escape(alone)}]"
        return re.compile(f"{alone_class}{SPACE}+{rest}*|{rest}+")

    def encode_chunk(self, normalized: str) -> list[int]:
        """Ids of already-normalized text: BPE merges, then byte fallback (or <unk>)."""
        ids: list[int] = []
        for symbol in bpe_merge(list(normalized), self.scores):
            i = self.piece_to_id.get(symbol)
            if i is not None and i != self.unk_id:
                ids.append(i)
            elif self.model.byte_fallback:
                ids.extend(self.byte_ids[b] for b in symbol.encode("utf-8"))
            else:
                ids.append(self.unk_id)  # `encode` folds runs of these
        return ids

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of `text`, like `SentencePieceProcessor.encode(text, add_bos=bos, add_eos=eos)`."""
        check_text(text)
        normalized = self.normalize(text)
        if self.chunk_re is None:
            ids = self.encode_chunk(normalized)
        else:
            ids, cache = [], self.cache
            for chunk in self.chunk_re.findall(normalized):
                got = cache.get(chunk)
                if got is None:
                    if len(cache) >= MAX_CACHE:
                        cache.clear()  # keep memory bounded on endless streams of new words
                    got = cache[chunk] = self.encode_chunk(chunk)
                ids += got
        if not self.model.byte_fallback:  # sentencepiece folds a run of unknown symbols into one <unk>
            ids = [i for k, i in enumerate(ids) if not (i == self.unk_id and k and ids[k - 1] == self.unk_id)]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    # ------------------------------------------------------------------ decode

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, like `SentencePieceProcessor.decode(ids)`."""
        check_ids(ids, self.vocab_size)
        m = self.model
        strip_first_space = m.add_dummy_prefix or m.remove_extra_whitespaces
        out: list[str] = []
        pending = bytearray()  # a run of byte pieces, decoded together
        at_start = True  # nothing printed yet and no leading "▁" dropped yet
        for i in ids:
            kind = self.types[i]
            if kind == PieceType.BYTE:
                pending.append(int(self.pieces[i][3:5], 16))
                continue
            if pending:
                out.append(decode_utf8_like_sentencepiece(bytes(pending)))
                pending.clear()
                at_start = False
            if kind == PieceType.CONTROL:
                continue  # <s>, </s>: invisible
            if kind == PieceType.UNKNOWN:
                out.append(m.unk_surface)
                at_start = at_start and not m.unk_surface
                continue
            piece = self.pieces[i]
            if at_start and strip_first_space and piece.startswith(SPACE):
                piece = piece[1:]  # the dummy prefix; with remove_extra_whitespaces, all leading ones
                at_start = m.remove_extra_whitespaces and not piece
            else:
                at_start = at_start and not piece
            out.append(piece.replace(SPACE, " "))
        if pending:
            out.append(decode_utf8_like_sentencepiece(bytes(pending)))
        return "".join(out)

    def id_to_piece(self, i: int) -> str:
        check_ids([i], self.vocab_size)
        return self.pieces[i]
