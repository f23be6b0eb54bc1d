"""Our SentencePiece BPE against the real sentencepiece library, on Meta's LLaMA 2 tokenizer."""

import random

import pytest
import sentencepiece as spm
from hypothesis import given, settings, strategies as st

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.checks import TokenizerInputError
from llama_from_scratch.tokenizer.protobuf_wire import ModelFormatError
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE, decode_utf8_like_sentencepiece
from llama_from_scratch.tokenizer.sentencepiece_merge import bpe_merge
from llama_from_scratch.tokenizer.sentencepiece_model import parse_model, read_model, serialize_model


@pytest.fixture(scope="module")
def model_path():
    return datafiles.path("llama2_tokenizer.model")


@pytest.fixture(scope="module")
def sp(model_path):
    return spm.SentencePieceProcessor(model_file=str(model_path))


@pytest.fixture(scope="module")
def ours(model_path):
    return SentencePieceBPE.from_file(model_path)


@pytest.fixture(scope="module")
def shakespeare():
    return datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")


CASES = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "\n\n \n",
    " \t \r\n ",
    "Hello world",
    " leading and trailing spaces  ",
    "double  spaces   and    more",
    "def f(x):\n\tif x:\n\t\treturn [i for i in range(10)]\n    else:\n        pass\n",
    "int main() {\r\n    return 0;\r\n}\r\n",
    "CRLF line\r\nnext line\r\n",
    "你好，世界！这是一个测试。日本語のテキスト、한국어 텍스트",
    "emoji 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵 ❤️",
    "digits 0 12 345 6789 3.14159 1,000,000 2023-07-18",
    "combining e\u0301 a\u0300 n\u0303 \u1e9b\u0323 Zalgo Z\u0351\u036b\u0343",
    "Ünïcödé façade naïve résumé ß Σίσυφος",
    "RTL: مرحبا بالعالم שלום",
    "<s> [INST] not special </s> <unk> <0x41>",
    "\x00\x01\x7f \ufeff \u200b \ufffd",
    "\U0010ffff \U0001d11e \U00020000",
    "a" * 300 + " " + "ab" * 200,
]


@pytest.mark.parametrize("text", CASES)
def test_encode_and_decode_match_sentencepiece(sp, ours, text):
    ids = sp.encode(text)
    assert ours.encode(text) == ids
    assert ours.decode(ids) == sp.decode(ids)
    assert ours.encode(text, bos=True, eos=True) == sp.encode(text, add_bos=True, add_eos=True)
    if "\u2581" not in text:
        assert ours.decode(ours.encode(text)) == text


def test_whole_shakespeare_and_every_line(sp, ours, shakespeare):
    assert ours.encode(shakespeare) == sp.encode(shakespeare)
    lines = shakespeare.split("\n")
    assert [ours.encode(line) for line in lines] == sp.encode(lines)


def test_without_cache_gives_the_same_ids(model_path, sp, shakespeare):
    plain = SentencePieceBPE.from_file(model_path)
    plain.chunk_re = None  # encode the whole normalized text in one go, no chunking
    text = shakespeare[:20_000]
    assert plain.encode(text) == sp.encode(text)


def test_pieces_never_hold_space_after_another_character(ours):
    # The property that makes the per-chunk cache exact on LLaMA 2's tokenizer.
    assert ours.chunk_re is not None


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_fuzz_random_unicode(sp, ours, text):
    ids = sp.encode(text)
    assert ours.encode(text) == ids
    if "\u2581" not in text:
        assert ours.decode(ids) == text
    else:
        assert ours.decode(ids) == sp.decode(ids)


WHITESPACEY = st.text(alphabet=st.sampled_from(list(" \t\n\r\u2581\u3000\u00a0ab1.\u00e9\u4f60\U0001f600\u200d\ufe0f")),
                      max_size=30)


@settings(max_examples=500, deadline=None)
@given(WHITESPACEY)
def test_fuzz_whitespace_heavy(sp, ours, text):
    ids = sp.encode(text)
    assert ours.encode(text) == ids
    assert ours.decode(ids) == sp.decode(ids)


def test_decode_random_ids_matches_sentencepiece(sp, ours):
    rng = random.Random(0)
    n = ours.vocab_size
    for length in list(range(0, 8)) * 40 + [50] * 40:
        ids = [rng.randrange(n) for _ in range(length)]
        assert ours.decode(ids) == sp.decode(ids), ids
    # Mostly byte pieces (3..258) and specials: invalid UTF-8 runs, <unk>, <s>, leading "▁".
    for _ in range(500):
        ids = [rng.choice([0, 1, 2, 29871, 259, 1678, rng.randrange(3, 259), rng.randrange(3, 259)])
               for _ in range(rng.randrange(1, 10))]
        assert ours.decode(ids) == sp.decode(ids), ids


def test_special_ids_and_pieces(sp, ours):
    assert (ours.bos_id, ours.eos_id, ours.unk_id, ours.vocab_size) == (sp.bos_id(), sp.eos_id(), sp.unk_id(), 32000)
    assert [ours.id_to_piece(i) for i in range(0, 32000, 97)] == [sp.id_to_piece(i) for i in range(0, 32000, 97)]
    assert ours.decode([0]) == sp.decode([0]) == " \u2047 "
    assert ours.decode([1, 2]) == ""


def test_bpe_merge_by_hand():
    scores = {"ab": -1.0, "bc": -0.5, "abc": -2.0, "cd": -3.0}
    # "bc" scores best; then "a"+"bc" is the piece "abc" (sentencepiece looks only at the concatenation,
    # not at which merge made a piece); "abc"+"d" and "cd" are gone or not pieces.
    assert bpe_merge(list("abcd"), scores) == ["abc", "d"]
    assert bpe_merge(list("abd"), scores) == ["ab", "d"]
    # Equal scores: the leftmost pair goes first.
    assert bpe_merge(list("aaa"), {"aa": 0.0}) == ["aa", "a"]


def test_utf8_replacement_is_per_byte_like_sentencepiece():
    assert decode_utf8_like_sentencepiece(b"\xe2\x82A") == "\ufffd\ufffdA"  # Python would give one U+FFFD
    assert decode_utf8_like_sentencepiece("é€😀".encode()) == "é€😀"
    assert decode_utf8_like_sentencepiece(b"\xed\xa0\x80") == "\ufffd" * 3  # an encoded surrogate


def test_model_file_round_trip(model_path):
    raw = model_path.read_bytes()
    model = parse_model(raw)
    assert serialize_model(model) == raw
    assert (model.normalizer_name, model.add_dummy_prefix, model.remove_extra_whitespaces) == ("identity", True, False)
    assert model.byte_fallback and model.model_type == 2


def test_bad_input(ours, tmp_path):
    with pytest.raises(TokenizerInputError, match="surrogate"):
        ours.encode("ok \ud800 not ok")
    with pytest.raises(TokenizerInputError, match="str"):
        ours.encode(b"bytes")
    with pytest.raises(TokenizerInputError, match="32000") as err:
        ours.decode([5, 32000])
    assert "32000" in str(err.value) and "id 32000" in str(err.value)
    with pytest.raises(TokenizerInputError, match="-1"):
        ours.decode([-1])
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a protobuf at all\n")
    with pytest.raises(ModelFormatError, match="notes.txt"):
        read_model(bogus)
    with pytest.raises(ModelFormatError, match="empty.model"):
        (tmp_path / "empty.model").write_bytes(b"")
        read_model(tmp_path / "empty.model")
