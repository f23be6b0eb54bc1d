"""The chat command (Meta's chat format, multi-turn), the memory account, device/dtype choice."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints import hf_writer, meta_format
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.inference.device import pick_device, pick_dtype
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.inference.memory import T4_GPU_BYTES, memory_account
from llama_from_scratch.model.config import PRESETS, ModelArgs
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.chat import encode_dialog
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE

TOKENIZER = datafiles.path("llama2_tokenizer.model")
# The real 32,000-token vocabulary around a tiny body: the chat format needs the real tokenizer.
CHAT_ARGS = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=32000, multiple_of=16,
                      max_seq_len=256)


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = Transformer(CHAT_ARGS).eval()
    with torch.no_grad():
        model.output.weight.mul_(40.0)  # peaked logits: greedy answers differ between prompts
    path = tmp_path_factory.mktemp("chat") / "llama-tiny-chat-hf"
    hf_writer.save_hf(model, path)
    return path, load_model(path)


@pytest.fixture(scope="module")
def tokenizer():
    return SentencePieceBPE.from_file(TOKENIZER)


def chat_cli(path, *args, stdin=""):
    env = {**os.environ, "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    return subprocess.run([sys.executable, "-m", "llama_from_scratch", "chat", "--checkpoint", str(path),
                           "--tokenizer", str(TOKENIZER), "--temperature", "0", "--max-new-tokens", "6", *args],
                          input=stdin, capture_output=True, text=True, env=env, timeout=120)


def reply(model, tokenizer, dialog):
    ids = generate(model, [encode_dialog(dialog, tokenizer)], 6, temperature=0.0, stop_ids=[2])[0]
    return tokenizer.decode(ids)


def test_one_message_with_a_system_prompt(chat_checkpoint, tokenizer):
    path, model = chat_checkpoint
    dialog = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is RoPE?"}]
    proc = chat_cli(path, "--system", "Answer briefly.", "--message", "What is RoPE?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == reply(model, tokenizer, dialog) + "\n"
    assert "memory account" in proc.stderr and "KV cache per token" in proc.stderr


def chat_main(path, *args, stdin="", monkeypatch=None):
    """The chat command in this process (fast); stdin from a string."""
    from llama_from_scratch.cli.main import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["chat", "--checkpoint", str(path), "--tokenizer", str(TOKENIZER), "--temperature", "0",
                 "--max-new-tokens", "6", *args])


def test_multi_turn_dialog_from_stdin_feeds_earlier_answers_back(chat_checkpoint, tokenizer, monkeypatch, capsys):
    path, model = chat_checkpoint
    assert chat_main(path, stdin="Hello there\n\nTell me more\n/reset\nTell me more\n", monkeypatch=monkeypatch) == 0
    dialog = [{"role": "user", "content": "Hello there"}]
    first = reply(model, tokenizer, dialog)
    dialog += [{"role": "assistant", "content": first.strip()}, {"role": "user", "content": "Tell me more"}]
    second = reply(model, tokenizer, dialog)
    fresh = reply(model, tokenizer, [{"role": "user", "content": "Tell me more"}])
    assert capsys.readouterr().out == f"{first}\n{second}\n{fresh}\n"


def test_special_tags_and_a_wrong_tokenizer_are_clear_errors(chat_checkpoint, monkeypatch, capsys):
    path, _ = chat_checkpoint
    assert chat_main(path, "--message", "hi [INST] there", monkeypatch=monkeypatch) == 2
    assert "special tag '[INST]' is not allowed" in capsys.readouterr().err
    assert chat_main(path, "--message", "hi", "--tokenizer", str(datafiles.path("stories260K/tok512.bin")),
                     monkeypatch=monkeypatch) == 2
    assert "512 tokens but the model's vocabulary is 32000" in capsys.readouterr().err


def test_each_turn_feeds_the_whole_dialog_to_the_model(chat_checkpoint, tokenizer, monkeypatch, capsys):
    """A tiny random model may answer alike with or without the history: check the prompts themselves."""
    from llama_from_scratch.inference import generation

    path, _ = chat_checkpoint
    prompts, real_stream = [], generation.stream
    monkeypatch.setattr(generation, "stream", lambda model, prompt, *a, **k: prompts.append(list(prompt))
                        or real_stream(model, prompt, *a, **k))
    assert chat_main(path, "--system", "Be brief.", stdin="Hello there\nTell me more\n", monkeypatch=monkeypatch) == 0
    first, second = capsys.readouterr().out.splitlines()
    dialog = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert prompts[0] == encode_dialog(dialog, tokenizer)
    dialog += [{"role": "assistant", "content": first.strip()}, {"role": "user", "content": "Tell me more"}]
    assert prompts[1] == encode_dialog(dialog, tokenizer)
    assert prompts[1][:len(prompts[0])] == prompts[0] and prompts[1].count(2) == 1  # one EOS: one finished exchange


def test_memory_account_matches_real_tensors():
    args = PRESETS["tiny"]
    model = Transformer(args).to(torch.float16)
    account = memory_account(args, torch.float16, tokens=37, batch=3)
    assert account.weight_bytes == sum(p.nbytes for p in model.parameters())
    cache = model.new_cache(3, 37)
    assert account.kv_bytes == sum(c.k.nbytes + c.v.nbytes for c in cache)


def test_llama2_7b_on_a_t4():
    account = memory_account(PRESETS["7B"], torch.float16)
    assert account.n_params == 6_738_415_616  # LLaMA 2 7B's parameter count
    assert account.weight_bytes == 13_476_831_232  # "13.5 GB"
    assert account.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2  # 0.5 MiB
    assert not account.fits(T4_GPU_BYTES)  # the full 4,096-token cache does not fit beside the weights
    assert 2500 < account.max_tokens(T4_GPU_BYTES) < 4096
    assert memory_account(PRESETS["7B"], torch.float16, tokens=2048).fits(T4_GPU_BYTES)
    assert not memory_account(PRESETS["13B"], torch.float16, tokens=1).fits(T4_GPU_BYTES)
    assert "does NOT fit" in account.report(T4_GPU_BYTES, "T4")


def test_device_and_dtype_choice_on_this_machine():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_dtype("auto", torch.device("cpu")) is None  # as stored
    assert pick_dtype("fp16", torch.device("cpu")) == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype("float8", torch.device("cpu"))
    assert pick_dtype("auto", torch.device("cpu"), stored=torch.bfloat16) is None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")


def test_bfloat16_becomes_float16_on_a_gpu_without_it(monkeypatch):
    """The T4 rule, with the GPU's capability faked (this machine may have no GPU)."""
    from llama_from_scratch.inference import device as device_module

    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    assert pick_dtype("auto", cuda, stored=torch.bfloat16) == torch.float16  # Meta's bfloat16 files
    assert pick_dtype("auto", cuda, stored=torch.float16) is None  # Hugging Face's float16: as stored
    with pytest.raises(ValueError, match="Tesla T4 has no fast bfloat16.*--dtype float16"):
        pick_dtype("bfloat16", cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))  # an H100
    assert device_module.native_bf16(cuda) and pick_dtype("auto", cuda, stored=torch.bfloat16) is None


def test_half_precision_load_keeps_the_logits_close(tmp_path):
    torch.manual_seed(0)
    model = Transformer(PRESETS["tiny"]).eval()
    meta_format.save_meta(model, tmp_path, n_shards=2)
    half = load_model(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    assert half.freqs_cos.dtype == torch.float32
    tokens = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        full, low = model(tokens), half(tokens)
    torch.testing.assert_close(low, full, atol=0.05, rtol=0.05)
    assert (low.argmax(-1) == full.argmax(-1)).float().mean() > 0.9


def test_chat_answer_function_streams_what_it_returns(chat_checkpoint, tokenizer):
    import argparse

    from llama_from_scratch.cli.chat import answer

    path, model = chat_checkpoint
    out = io.StringIO()
    ns = argparse.Namespace(max_new_tokens=6, temperature=0.0, top_p=0.9, seed=1)
    text = answer(model, tokenizer, [{"role": "user", "content": "Hi"}], ns, out)
    assert out.getvalue() == text + "\n" or out.getvalue().strip() == text


@pytest.mark.parametrize("fmt", ["meta", "hf"])
def test_generate_command_reads_meta_and_hf_directories_with_device_and_dtype(tmp_path, fmt, capsys):
    from llama_from_scratch.cli.main import main

    stories = load_model(datafiles.path("stories260K/stories260K.bin"))
    if fmt == "meta":
        meta_format.save_meta(stories, tmp_path, n_shards=2)
    else:
        hf_writer.save_hf(stories, tmp_path)
    want = generate(load_model(tmp_path, dtype="bfloat16"), [[1, 403]], 12, temperature=0.0, stop_ids=[1, 2])[0]
    assert main(["generate", "--checkpoint", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16",
                 "--prompt-ids", "1 403", "--print-ids", "--temperature", "0", "--max-new-tokens", "12"]) == 0
    out = capsys.readouterr()
    assert out.out == " ".join(map(str, want)) + "\n"
    assert "memory account" in out.err and "weights (bfloat16)" in out.err
