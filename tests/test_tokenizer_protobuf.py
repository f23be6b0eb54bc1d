"""The hand-written protobuf wire format, on the examples of protobuf's own documentation."""

import struct

import pytest

from llama_from_scratch.tokenizer.protobuf_wire import (Message, ModelFormatError, read_fields, read_varint,
                                                        write_fields, write_varint)


def test_varints():
    assert read_varint(b"\x96\x01", 0) == (150, 2)  # the docs' example: 150 = 0b10010110 0b00000001
    assert write_varint(150) == b"\x96\x01"
    assert write_varint(0) == b"\x00" and write_varint(300) == b"\xac\x02"
    assert write_varint(-1) == b"\xff" * 9 + b"\x01"  # int32 -1 goes out as 10 bytes
    for value in [0, 1, 127, 128, 2**32, 2**63]:
        assert read_varint(write_varint(value), 0)[0] == value


def test_records_round_trip():
    raw = b"\x08\x96\x01" + b"\x12\x07testing" + b"\x1d" + struct.pack("<f", -2.5)
    records = read_fields(raw)
    assert records == [(1, 0, 150), (2, 2, b"testing"), (3, 5, struct.pack("<f", -2.5))]
    assert write_fields(records) == raw


def test_message_getters_and_setters():
    msg = Message(read_fields(b"\x08\x01\x20\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"))
    assert msg.get_bool(1, False) is True and msg.get_int(4, 0) == -1 and msg.get_str(9, "x") == "x"
    msg.set(2, "hi")
    msg.set(1, False)
    assert [r[0] for r in msg.records] == [1, 2, 4] and msg.get_str(2, "") == "hi" and not msg.get_bool(1, True)


@pytest.mark.parametrize("raw", [b"\x08", b"\x12\x05ab", b"\x0b", b"\x00\x01", b"\xff" * 11])
def test_malformed(raw):
    with pytest.raises(ModelFormatError):
        read_fields(raw)
