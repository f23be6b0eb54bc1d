"""Read and write SentencePiece `.model` files by hand, straight from the protobuf wire format.

A `.model` file is one serialized `ModelProto` message (sentencepiece_model.proto):

    field 1  repeated SentencePiece pieces   {1: piece (string), 2: score (float), 3: type (enum)}
    field 2  TrainerSpec trainer_spec        (how it was trained: model_type, byte_fallback, unk_surface, ...)
    field 3  NormalizerSpec normalizer_spec  (name, add_dummy_prefix, escape_whitespaces, ...)

protobuf_wire.py reads the records; every record is kept, so `write_model(read_model(path))` gives
the same bytes back for files written by protobuf's C++ serializer (fields in increasing number order).

Chapter: tokenizer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

from .protobuf_wire import Message, ModelFormatError, read_fields, write_fields


class PieceType(IntEnum):
    NORMAL = 1  # an ordinary piece, used by the merges
    UNKNOWN = 2  # <unk>
    CONTROL = 3  # <s>, </s>: never produced from text, decoded to nothing
    USER_DEFINED = 4  # always kept whole when it appears in the text
    UNUSED = 5
    BYTE = 6  # <0x00> ... <0xFF>, the byte fallback


@dataclass
class Piece:
    piece: str
    score: float
    type: PieceType = PieceType.NORMAL


# Field numbers used by this package (sentencepiece_model.proto).
TRAINER_MODEL_TYPE, TRAINER_VOCAB_SIZE = 3, 4  # model_type: 1 unigram, 2 bpe, 3 word, 4 char
TRAINER_TREAT_WS_AS_SUFFIX, TRAINER_SPLIT_DIGITS, TRAINER_BYTE_FALLBACK, TRAINER_UNK_SURFACE = 24, 25, 35, 44
TRAINER_UNK_ID, TRAINER_BOS_ID, TRAINER_EOS_ID, TRAINER_PAD_ID = 40, 41, 42, 43
NORM_NAME, NORM_CHARSMAP, NORM_ADD_DUMMY_PREFIX = 1, 2, 3
NORM_REMOVE_EXTRA_WS, NORM_ESCAPE_WS = 4, 5


@dataclass
class ModelProto:
    pieces: list[Piece]
    trainer_spec: Message = field(default_factory=Message)
    normalizer_spec: Message = field(default_factory=Message)
    other: list[tuple[int, int, int | bytes]] = field(default_factory=list)  # self_test_data, denormalizer

    # The handful of settings the encoder needs, with sentencepiece's defaults.
    @property
    def model_type(self) -> int:
        return self.trainer_spec.get_int(TRAINER_MODEL_TYPE, 1)

    @property
    def byte_fallback(self) -> bool:
        return self.trainer_spec.get_bool(TRAINER_BYTE_FALLBACK, False)

    @property
    def split_digits(self) -> bool:
        """Whether training split numbers into single digits (informational: encoding needs no rule)."""
        return self.trainer_spec.get_bool(TRAINER_SPLIT_DIGITS, False)

    @property
    def unk_surface(self) -> str:
        return self.trainer_spec.get_str(TRAINER_UNK_SURFACE, " \u2047 ")

    @property
    def treat_whitespace_as_suffix(self) -> bool:
        return self.trainer_spec.get_bool(TRAINER_TREAT_WS_AS_SUFFIX, False)

    @property
    def normalizer_name(self) -> str:
        return self.normalizer_spec.get_str(NORM_NAME, "nmt_nfkc")

    @property
    def precompiled_charsmap(self) -> bytes:
        v = self.normalizer_spec._last(NORM_CHARSMAP)
        return b"" if v is None else v

    @property
    def add_dummy_prefix(self) -> bool:
        return self.normalizer_spec.get_bool(NORM_ADD_DUMMY_PREFIX, True)

    @property
    def remove_extra_whitespaces(self) -> bool:
        return self.normalizer_spec.get_bool(NORM_REMOVE_EXTRA_WS, True)

    @property
    def escape_whitespaces(self) -> bool:
        return self.normalizer_spec.get_bool(NORM_ESCAPE_WS, True)


def bpe_model_proto(pieces: list[Piece]) -> ModelProto:
    """A BPE ModelProto around `pieces`: identity normalizer, dummy prefix, byte fallback."""
    trainer = Message()
    trainer.set(TRAINER_MODEL_TYPE, 2)  # BPE
    trainer.set(TRAINER_VOCAB_SIZE, len(pieces))
    trainer.set(TRAINER_BYTE_FALLBACK, True)
    normalizer = Message()
    normalizer.set(NORM_NAME, "identity")
    normalizer.set(NORM_ADD_DUMMY_PREFIX, True)
    normalizer.set(NORM_REMOVE_EXTRA_WS, False)
    normalizer.set(NORM_ESCAPE_WS, True)
    return ModelProto(pieces=list(pieces), trainer_spec=trainer, normalizer_spec=normalizer)


def parse_piece(buf: bytes) -> Piece:
    piece, score, kind = None, 0.0, PieceType.NORMAL
    for number, wire, value in read_fields(buf):
        if number == 1 and wire == 2:
            piece = value.decode("utf-8")
        elif number == 2 and wire == 5:
            score = struct.unpack("<f", value)[0]
        elif number == 3 and wire == 0:
            kind = PieceType(value)
    if piece is None:
        raise ModelFormatError("a piece without its text")
    return Piece(piece, score, kind)


def parse_model(data: bytes) -> ModelProto:
    """Parse the bytes of a `.model` file. Raises ModelFormatError when they are not a ModelProto."""
    try:
        model = ModelProto(pieces=[])
        for number, wire, value in read_fields(data):
            if number == 1 and wire == 2:
                model.pieces.append(parse_piece(value))
            elif number == 2 and wire == 2:
                model.trainer_spec = Message(read_fields(value))
            elif number == 3 and wire == 2:
                model.normalizer_spec = Message(read_fields(value))
            else:
                model.other.append((number, wire, value))
    except (UnicodeDecodeError, ValueError, struct.error) as err:
        raise ModelFormatError(str(err)) from err
    if not model.pieces:
        raise ModelFormatError("no pieces")
    return model


def read_model(path: str | Path) -> ModelProto:
    """Read a SentencePiece `.model` file; the error names the file when it is not one."""
    data = Path(path).read_bytes()
    try:
        return parse_model(data)
    except ModelFormatError as err:
        raise ModelFormatError(
            f"{path} is not a SentencePiece model file ({err}); pass a .model file such as "
            "llama2_tokenizer.model, or a llama2.c tokenizer .bin"
        ) from None


def serialize_piece(p: Piece) -> bytes:
    records = [(1, 2, p.piece.encode("utf-8")), (2, 5, struct.pack("<f", p.score))]
    if p.type != PieceType.NORMAL:  # NORMAL is the default: protobuf leaves it out
        records.append((3, 0, int(p.type)))
    return write_fields(records)


def serialize_model(model: ModelProto) -> bytes:
    records = [(1, 2, serialize_piece(p)) for p in model.pieces]
    records.append((2, 2, write_fields(model.trainer_spec.records)))
    records.append((3, 2, write_fields(model.normalizer_spec.records)))
    return write_fields(records + model.other)


def write_model(model: ModelProto, path: str | Path) -> None:
    Path(path).write_bytes(serialize_model(model))
