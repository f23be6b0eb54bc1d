"""The tokenizer protocol (`tokenizer.base.Tokenizer`): both formats share it, and generation,
streaming and the generate command use it, checked against sentencepiece itself."""

import os
import subprocess
import sys

import pytest
import sentencepiece as spm
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints import hf_writer
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer, document_stop_ids
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer
from llama_from_scratch.tokenizer.load import load_tokenizer
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE
from llama_from_scratch.tokenizer.sentencepiece_model import serialize_model

LLAMA2 = datafiles.path("llama2_tokenizer.model")
TOK512 = datafiles.path("stories260K/tok512.bin")
STORIES = datafiles.path("stories260K/stories260K.bin")
EMOJI_TEXT = "Hi 🙂🦙! Ça va? 世界 — naïve ﬁ 𝔘"  # characters outside the vocabulary: byte pieces


@pytest.fixture(scope="module")
def llama2():
    return load_tokenizer(LLAMA2)


@pytest.fixture(scope="module")
def tok512():
    return load_tokenizer(TOK512)


@pytest.fixture(scope="module")
def stories():
    return load_model(STORIES)


def test_both_formats_are_tokenizers_with_the_right_ids(llama2, tok512):
    sp = spm.SentencePieceProcessor(model_file=str(LLAMA2))
    assert isinstance(llama2, SentencePieceBPE) and isinstance(llama2, Tokenizer)
    assert isinstance(tok512, Llama2cTokenizer) and isinstance(tok512, Tokenizer)
    assert (llama2.bos_id, llama2.eos_id, llama2.vocab_size) == (1, 2, 32000)
    assert (llama2.bos_id, llama2.eos_id, llama2.vocab_size) == (sp.bos_id(), sp.eos_id(), sp.get_piece_size())
    assert (tok512.bos_id, tok512.eos_id, tok512.vocab_size) == (1, 2, 512)
    assert tok512.vocab[1:3] == [b"\n<s>\n", b"\n</s>\n"]  # the file itself: BOS and EOS at 1 and 2
    assert llama2.stop_ids == tok512.stop_ids == (2, 1)  # a document ends at EOS or the next BOS
    with pytest.raises(TypeError, match="abstract"):
        Tokenizer()


def test_document_stop_ids_leave_out_missing_tokens():
    assert document_stop_ids(1, [2]) == (2, 1)
    assert document_stop_ids(None, [128001, 128009]) == (128001, 128009)  # e.g. a list from config.json
    assert document_stop_ids(-1, [2, 2]) == (2,)  # sentencepiece's -1: no such token
    assert document_stop_ids(None, []) == ()


def test_llama2_streaming_equals_sentencepiece_on_characters_split_over_byte_pieces(llama2):
    sp = spm.SentencePieceProcessor(model_file=str(LLAMA2))
    ids = llama2.encode(EMOJI_TEXT)
    assert ids == sp.encode(EMOJI_TEXT)
    assert sum(sp.id_to_piece(i).startswith("<0x") for i in ids) >= 8  # 🙂, 🦙, 𝔘: 4 byte pieces each
    pieces = list(llama2.stream_text(ids, prev_token=llama2.bos_id))
    assert "".join(pieces) == llama2.decode_continuation(ids, llama2.bos_id) == sp.decode(ids) == EMOJI_TEXT
    assert all("\ufffd" not in p for p in pieces)  # an unfinished character is held back, not shown
    # SentencePiece decides from the ids alone: the token before changes nothing.
    assert llama2.decode_continuation(ids[3:], ids[2]) == llama2.decode(ids[3:]) == sp.decode(ids[3:])


def test_llama2c_streaming_of_a_generated_story_equals_the_continuation(stories, tok512):
    prompt = tok512.encode("Once upon a time, Lily", bos=True)
    new = generate(stories, [prompt], 80, temperature=0.8, top_p=0.9, seed=2, stop_ids=tok512.stop_ids)[0]
    assert len(new) > 20
    pieces = list(tok512.stream_text(new, prev_token=prompt[-1]))
    text = tok512.decode_continuation(new, prompt[-1])
    assert "".join(pieces) == text and len(pieces) > 10
    # The reference: sentencepiece on the same vocabulary, prompt and continuation decoded together.
    sp = spm.SentencePieceProcessor(model_proto=serialize_model(tok512.to_sentencepiece_model()))
    assert sp.decode(prompt + new) == sp.decode(prompt) + text


def test_llama2c_streaming_holds_back_a_split_character(tok512):
    ids = tok512.encode("A cat 🙂 and a ñ")
    assert sum(3 <= i < 259 for i in ids) >= 4  # the emoji as byte tokens (tok512 has no such piece)
    pieces = list(tok512.stream_text(ids, prev_token=tok512.bos_id))
    assert "".join(pieces) == tok512.decode(ids) == "A cat 🙂 and a ñ"
    assert all("\ufffd" not in p for p in pieces)


def test_generate_command_text_is_decode_continuation_of_its_ids(tmp_path):
    """The SentencePiece path of `generate`: a tiny random body around LLaMA 2's vocabulary."""
    torch.manual_seed(0)
    model = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=4, vocab_size=32000, multiple_of=16,
                                  max_seq_len=128)).eval()
    with torch.no_grad():
        model.output.weight.mul_(40.0)  # peaked logits: a varied greedy continuation
    hf_writer.save_hf(model, tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").symlink_to(LLAMA2)  # found at the default path
    tokenizer = load_tokenizer(LLAMA2)
    prompt = "The llama 🦙 said"
    ids = tokenizer.encode(prompt, bos=True)
    new = generate(load_model(tmp_path / "hf"), [ids], 24, temperature=0.0, stop_ids=tokenizer.stop_ids)[0]
    env = {**os.environ, "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    base = [sys.executable, "-m", "llama_from_scratch", "generate", "--checkpoint", str(tmp_path / "hf"),
            "--device", "cpu", "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24"]
    text = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 0, text.stderr
    assert text.stdout == tokenizer.decode_continuation(new, ids[-1]) + "\n"
    printed = subprocess.run(base + ["--print-ids"], capture_output=True, text=True, env=env, timeout=120)
    assert printed.stdout == " ".join(map(str, new)) + "\n" and len(new) > 5
