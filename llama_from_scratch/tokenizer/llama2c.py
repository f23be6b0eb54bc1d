"""llama2.c's `tokenizer.bin`: read it, and encode/decode exactly as llama2.c's run.c does.

The file (written by llama2.c's tokenizer.py `export`) is:

    uint32 max_token_length
    then, for every token id in order:  float32 score, uint32 byte length, the token's bytes

The vocabulary size is not stored: the file simply ends. Pieces are stored with "▁" already turned
back into a space, and byte-fallback pieces keep their SentencePiece names "<0x00>".."<0xFF>"
(ids 3..258, after <unk>=0, BOS=1, EOS=2).

run.c's encode works on bytes and is a simpler, quadratic cousin of SentencePiece's BPE: look up
each UTF-8 character (byte fallback to id byte+3 when it is not a token), then repeatedly merge the
adjacent pair whose concatenation is a token with the highest score (the leftmost on ties), until
none is. Not handled: tokens without a score above -1e10 never merge, as in run.c.

Chapter: tokenizer.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

from .base import Tokenizer
from .checks import check_ids, check_text
from .sentencepiece_model import ModelFormatError, ModelProto, Piece, PieceType, bpe_model_proto

BOS_ID, EOS_ID = 1, 2  # fixed in run.c
BYTE_OFFSET = 3  # byte b is token b + 3


class Llama2cTokenizer(Tokenizer):
    """A llama2.c vocabulary: token bytes and scores by id; encode/decode as run.c does."""

    def __init__(self, vocab: list[bytes], scores: list[float], max_token_length: int):
        self.vocab = vocab
        self.scores = scores
        self.max_token_length = max_token_length
        # run.c sorts the vocabulary and binary-searches it; a dict is the same lookup.
        self.lookup = {piece: i for i, piece in reversed(list(enumerate(vocab)))}
        self.bos_id, self.eos_id = BOS_ID, EOS_ID

    @classmethod
    def from_file(cls, path: str | Path) -> "Llama2cTokenizer":
        data = Path(path).read_bytes()
        if len(data) < 4:
            raise ModelFormatError(f"{path} is too short to be a llama2.c tokenizer.bin file")
        (max_len,) = struct.unpack_from("<I", data, 0)
        vocab, scores, pos = [], [], 4
        while pos < len(data):
            if pos + 8 > len(data):
                raise ModelFormatError(f"{path} is not a llama2.c tokenizer.bin file: it ends inside an entry at byte {pos}")
            score, length = struct.unpack_from("<fI", data, pos)
            if length > max_len or pos + 8 + length > len(data):
                raise ModelFormatError(
                    f"{path} is not a llama2.c tokenizer.bin file: token {len(vocab)} claims {length} bytes "
                    f"(max_token_length is {max_len}, {len(data) - pos - 8} bytes left)"
                )
            vocab.append(data[pos + 8:pos + 8 + length])
            scores.append(score)
            pos += 8 + length
        if len(vocab) < BYTE_OFFSET + 256 or b" " not in vocab:
            raise ModelFormatError(f"{path} is not a llama2.c tokenizer.bin file: it needs <unk>, <s>, </s>, "
                                   f"256 byte tokens and a space token; it has {len(vocab)} tokens")
        return cls(vocab, scores, max_len)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of `text`, following run.c's `encode()` step by step."""
        check_text(text)
        tokens = [BOS_ID] if bos else []
        if text:  # the dummy prefix: a space token in front of any non-empty text
            tokens.append(self.lookup[b" "])
        for char in text:  # one UTF-8 character at a time
            utf8 = char.encode("utf-8")
            if utf8 in self.lookup:
                tokens.append(self.lookup[utf8])
            else:  # byte fallback
                tokens.extend(b + BYTE_OFFSET for b in utf8)
        while True:  # merge the best pair, again and again (run.c looks at BOS too; it never pairs)
            best_score, best_id, best_at = -1e10, -1, -1
            for i in range(len(tokens) - 1):
                merged = self.lookup.get(self.vocab[tokens[i]] + self.vocab[tokens[i + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best_score, best_id, best_at = self.scores[merged], merged, i
            if best_at == -1:
                break
            tokens[best_at:best_at + 2] = [best_id]
        return tokens + ([EOS_ID] if eos else [])

    def decode_piece(self, prev_token: int, token: int) -> bytes:
        """run.c's `decode()`: the bytes one token prints, given the token before it."""
        piece = self.vocab[token]
        if prev_token == BOS_ID and piece.startswith(b" "):
            piece = piece[1:]  # after BOS, sentencepiece's decoder drops the leading space
        if len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            try:
                return bytes([int(piece[3:5], 16)])
            except ValueError:
                pass
        return piece

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` as run.c prints them at the start of a sequence, after BOS."""
        return self.decode_continuation(ids, BOS_ID)

    def decode_continuation(self, ids: Sequence[int], prev_token: int) -> str:
        """Text of `ids` as run.c prints them one by one after `prev_token`.

        Control tokens print as their stored text (tok512 stores BOS as "\\n<s>\\n"); run.c's generate
        loop stops at BOS before printing it. Invalid UTF-8 is replaced by U+FFFD.
        """
        check_ids(ids, self.vocab_size)
        out = bytearray()
        for token in ids:
            out += self.decode_piece(prev_token, token)
            prev_token = token
        return out.decode("utf-8", errors="replace")

    def to_sentencepiece_model(self) -> ModelProto:
        """The same vocabulary as a SentencePiece BPE ModelProto (▁ for spaces, typed pieces)."""
        pieces = []
        for i, (raw, score) in enumerate(zip(self.vocab, self.scores)):
            if i == 0:
                pieces.append(Piece("<unk>", score, PieceType.UNKNOWN))
            elif i in (BOS_ID, EOS_ID):
                pieces.append(Piece(raw.decode().strip(), score, PieceType.CONTROL))
            elif i < BYTE_OFFSET + 256:
                pieces.append(Piece(raw.decode(), score, PieceType.BYTE))
            else:
                pieces.append(Piece(raw.decode("utf-8").replace(" ", "\u2581"), score))
        return bpe_model_proto(pieces)

