"""The SentencePiece-style trainer writes .model files the sentencepiece library loads and agrees with."""

import pytest
import sentencepiece as spm

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE
from llama_from_scratch.tokenizer.sentencepiece_model import (PieceType, read_model, serialize_model,
                                                              write_model)
from llama_from_scratch.tokenizer.sentencepiece_trainer import train


@pytest.fixture(scope="module")
def shakespeare():
    return datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def trained(shakespeare, tmp_path_factory):
    path = tmp_path_factory.mktemp("spm") / "shakespeare.model"
    write_model(train(shakespeare, 2000), path)
    return path


def test_sentencepiece_loads_it_and_encodes_like_ours(trained, shakespeare):
    sp = spm.SentencePieceProcessor(model_file=str(trained))
    ours = SentencePieceBPE.from_file(trained)
    assert sp.vocab_size() == ours.vocab_size == 2000
    assert ours.encode(shakespeare) == sp.encode(shakespeare)
    lines = shakespeare.split("\n")[:3000]
    assert [ours.encode(line) for line in lines] == sp.encode(lines)
    # Characters the corpus never saw go through byte fallback, identically.
    for text in ["Zounds! 你好 😀 naïve ü", "  two  spaces\tand tab", "", " ", "x" * 50]:
        ids = sp.encode(text)
        assert ours.encode(text) == ids
        assert ours.decode(ids) == sp.decode(ids) == text


def test_layout_and_merges(trained):
    model = read_model(trained)
    types = [p.type for p in model.pieces]
    assert [p.piece for p in model.pieces[:4]] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert types[3:259] == [PieceType.BYTE] * 256
    normal = model.pieces[259:]
    assert all(p.type == PieceType.NORMAL for p in normal)
    assert len({p.piece for p in model.pieces}) == len(model.pieces)  # no duplicates
    scores = [p.score for p in normal]
    assert scores == sorted(scores, reverse=True)
    assert "\u2581the" in {p.piece for p in normal}  # a frequent word became one piece
    assert not any("\n" in p.piece for p in normal)


def test_character_coverage_leaves_rare_characters_to_bytes():
    text = "hello world\n" * 50 + "hello \u00e9\n"
    model = train(text, 300, character_coverage=0.99)
    pieces = {p.piece for p in model.pieces}
    assert "\u00e9" not in pieces and not any("\u00e9" in p for p in pieces)
    sp = spm.SentencePieceProcessor(model_proto=serialize_model(model))
    assert SentencePieceBPE(model).encode("h\u00e9llo") == sp.encode("h\u00e9llo")


def test_too_small_vocabulary():
    with pytest.raises(ValueError, match="too small"):
        train("abc def\n", 200)
