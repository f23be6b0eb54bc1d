"""llama2.c's tokenizer.bin (stories260K's tok512.bin): load, decode, encode as run.c does."""

import pytest
import sentencepiece as spm

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.checks import TokenizerInputError
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer
from llama_from_scratch.tokenizer.load import load_tokenizer
from llama_from_scratch.tokenizer.protobuf_wire import ModelFormatError
from llama_from_scratch.tokenizer.sentencepiece_model import serialize_model


@pytest.fixture(scope="module")
def tok():
    return Llama2cTokenizer.from_file(datafiles.path("stories260K/tok512.bin"))


def test_file_contents(tok):
    assert tok.vocab_size == 512 and tok.max_token_length == 7
    assert tok.vocab[:3] == [b"<unk>", b"\n<s>\n", b"\n</s>\n"]
    assert tok.vocab[3] == b"<0x00>" and tok.vocab[258] == b"<0xFF>"
    assert isinstance(load_tokenizer(datafiles.path("stories260K/tok512.bin")), Llama2cTokenizer)


def test_hand_derived_ids(tok):
    # Looked up by hand in the file: " Once"=403, " upon"=407, " a"=261, " time"=378.
    assert [tok.vocab[i] for i in (403, 407, 261, 378)] == [b" Once", b" upon", b" a", b" time"]
    assert tok.encode("Once upon a time", bos=True, eos=True) == [1, 403, 407, 261, 378, 2]
    assert tok.decode([403, 407, 261, 378]) == "Once upon a time"  # the space after BOS is dropped
    assert tok.decode_continuation([261], 378) == " a"  # after " time" the space stays
    assert tok.decode_continuation([403], 1) == tok.decode([403]) == "Once"
    # "\n" is not a token: byte fallback gives byte 0x0A + 3 = 13, and decoding turns it back.
    assert tok.encode("\n") == [tok.lookup[b" "], 13]
    assert tok.decode([13]) == "\n"
    assert tok.encode("") == []


def test_encode_matches_sentencepiece_on_the_same_vocabulary(tok):
    # run.c's quadratic loop and sentencepiece's priority queue merge the same pairs in the same
    # order (best score, then leftmost); check it with the real library on tok512 as a .model.
    sp = spm.SentencePieceProcessor(model_proto=serialize_model(tok.to_sentencepiece_model()))
    text = datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")
    lines = text.split("\n")[:400] + ["", " ", "  two  spaces", "Tab\there", "caf\u00e9 \u4f60\u597d \U0001f600", "123 456"]
    for line in lines:
        ids = tok.encode(line, bos=True)
        assert ids == sp.encode(line, add_bos=True), line
        assert tok.decode(ids[1:]) == sp.decode(ids) == line


def test_bad_input(tok, tmp_path):
    with pytest.raises(TokenizerInputError, match="512"):
        tok.decode([512])
    with pytest.raises(TokenizerInputError, match="surrogate"):
        tok.encode("\udc80")
    bogus = tmp_path / "random.bin"
    bogus.write_bytes(b"\x07\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(ModelFormatError, match="random.bin"):
        Llama2cTokenizer.from_file(bogus)
    with pytest.raises(ModelFormatError, match="random.bin"):
        load_tokenizer(bogus)
