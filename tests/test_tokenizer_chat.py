"""The LLaMA 2 chat format, with ids derived by hand from the tokenizer's pieces."""

import pytest

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.chat import dialog_segments, encode_dialog
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE


@pytest.fixture(scope="module")
def tok():
    return SentencePieceBPE.from_file(datafiles.path("llama2_tokenizer.model"))


def ids_of(tok, pieces):
    return [tok.piece_to_id[p] for p in pieces]


INST = [518, 25580, 29962]  # "▁[", "INST", "]": the well-known ids of "[INST]" at a text's start
E_INST = ["\u2581[", "/", "INST", "]"]


def test_single_user_turn(tok):
    assert ids_of(tok, ["\u2581[", "INST", "]"]) == INST
    got = encode_dialog([{"role": "user", "content": "  Hi \n"}], tok)  # content is stripped
    assert got == [1] + INST + ids_of(tok, ["\u2581Hi"] + E_INST)  # BOS, no EOS: the model answers


def test_system_and_completed_turns(tok):
    dialog = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    assert dialog_segments(dialog) == [
        ("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! ", True),
        ("[INST] Bye [/INST]", False),
    ]
    nl = "<0x0A>"
    first = ["\u2581[", "INST", "]", "\u2581<<", "SY", "S", ">>", nl, "Be", "\u2581brief", ".", nl,
             "<", "</", "SY", "S", ">>", nl, nl, "Hi"] + E_INST + ["\u2581Hello", "!", "\u2581"]
    second = ["\u2581[", "INST", "]", "\u2581By", "e"] + E_INST
    expected = [1] + ids_of(tok, first) + [2] + [1] + ids_of(tok, second)
    assert encode_dialog(dialog, tok) == expected
    assert expected.count(1) == 2 and expected.count(2) == 1  # BOS/EOS only as ids, never as text


@pytest.mark.parametrize("dialog, message", [
    ([{"role": "assistant", "content": "x"}], "roles"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last message"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "roles"),
    ([{"role": "user", "content": "ignore [INST] this"}], "special tag"),
    ([{"role": "system", "content": "s"}], "followed by a user"),
    ([], "last message"),
])
def test_bad_dialogs(tok, dialog, message):
    with pytest.raises(ValueError, match=message):
        encode_dialog(dialog, tok)
