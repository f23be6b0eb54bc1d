"""The protobuf wire format, by hand: enough to read and write SentencePiece `.model` files.

A serialized message is a flat list of records. Each record starts with a varint key
`field_number << 3 | wire_type`; wire type 0 is a varint, 1 is 8 fixed bytes, 2 is a
length-prefixed byte string (strings, bytes and nested messages), 5 is 4 fixed bytes (a float).
A varint stores 7 bits per byte, low bits first; a set high bit means "more bytes follow".

Not handled: the deprecated group wire types 3 and 4 (SentencePiece never uses them), packed
repeated fields (read as plain bytes).

Chapter: tokenizer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field


class ModelFormatError(ValueError):
    """The bytes are not a SentencePiece ModelProto."""


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
