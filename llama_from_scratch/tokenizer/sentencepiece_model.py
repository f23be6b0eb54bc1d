"""Read and write SentencePiece `.model` files by hand, straight from the protobuf wire format.

A `.model` file is one serialized `ModelProto` message (sentencepiece_model.proto):

    field 1  repeated SentencePiece pieces   {1: piece (string), 2: score (float), 3: type (enum)}
    field 2  TrainerSpec trainer_spec        (how it was trained: model_type, byte_fallback, unk_surface, ...)
    field 3  NormalizerSpec normalizer_spec  (name, add_dummy_prefix, escape_whitespaces, ...)

The wire format is a flat list of (field number, wire type, value) records. Each record starts with
a varint key `field_number << 3 | wire_type`; wire type 0 is a varint, 1 is 8 fixed bytes, 2 is a
length-prefixed byte string (strings and nested messages), 5 is 4 fixed bytes (floats).

Every record is kept, so `write_model(read_model(path))` gives the same bytes back for files written
by protobuf's C++ serializer (fields in increasing number order). Not handled: the deprecated group
wire types 3 and 4 (SentencePiece never uses them).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path


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


class ModelFormatError(ValueError):
    """The bytes are not a SentencePiece ModelProto."""


# ---------------------------------------------------------------- wire format

def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at `pos`: 7 bits per byte, low bits first, high bit = 'more follows'."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ModelFormatError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def write_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def read_fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Split one message into (field_number, wire_type, value) records, in file order.

    A varint value is returned as an int; the others as their raw bytes.
    """
    records, pos = [], 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ModelFormatError("field number 0")
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ModelFormatError(f"unsupported wire type {wire} in field {number}")
        if pos > len(buf):
            raise ModelFormatError(f"field {number} runs past the end of its message")
        records.append((number, wire, value))
    return records


def write_fields(records: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, wire, value in records:
        out += write_varint(number << 3 | wire)
        if wire == 0:
            out += write_varint(value)
        elif wire == 2:
            out += write_varint(len(value)) + value
        else:
            out += value
    return bytes(out)


# ---------------------------------------------------------------- typed views of a message

@dataclass
class Message:
    """A protobuf message kept as its records, with typed getters and setters for known fields."""

    records: list[tuple[int, int, int | bytes]] = field(default_factory=list)

    def _last(self, number: int):
        values = [v for n, _, v in self.records if n == number]
        return values[-1] if values else None  # protobuf: the last occurrence wins

    def get_int(self, number: int, default: int) -> int:
        v = self._last(number)
        if v is None:
            return default
        return v - (1 << 64) if v >= 1 << 63 else v  # int32 fields: back from two's complement

    def get_bool(self, number: int, default: bool) -> bool:
        return bool(self.get_int(number, int(default)))

    def get_str(self, number: int, default: str) -> str:
        v = self._last(number)
        return default if v is None else v.decode("utf-8")

    def set(self, number: int, value: int | bool | str | bytes | float) -> None:
        """Set a singular field (replacing earlier values), keeping records in field-number order."""
        if isinstance(value, float):
            record = (number, 5, struct.pack("<f", value))
        elif isinstance(value, (str, bytes)):
            record = (number, 2, value.encode("utf-8") if isinstance(value, str) else value)
        else:
            record = (number, 0, int(value))
        kept = [r for r in self.records if r[0] != number]
        at = next((i for i, r in enumerate(kept) if r[0] > number), len(kept))
        self.records = kept[:at] + [record] + kept[at:]


# Field numbers used by this package (sentencepiece_model.proto).
TRAINER_MODEL_TYPE, TRAINER_VOCAB_SIZE = 3, 4  # model_type: 1 unigram, 2 bpe, 3 word, 4 char
TRAINER_TREAT_WS_AS_SUFFIX, TRAINER_BYTE_FALLBACK, TRAINER_UNK_SURFACE = 24, 35, 44
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
