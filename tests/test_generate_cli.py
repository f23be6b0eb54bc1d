"""`python -m llama_from_scratch generate`: stdout holds only the result, stderr the rest."""

import os
import subprocess
import sys

import pytest

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints.llama2c import load_bin
from llama_from_scratch.cli.main import main
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer

CKPT = str(datafiles.path("stories260K/stories260K.bin"))
TOK = str(datafiles.path("stories260K/tok512.bin"))
STOP = [1, 2]


@pytest.fixture(scope="module")
def stories():
    return load_bin(CKPT)


def run_cli(*args):
    env = {**os.environ, "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    return subprocess.run([sys.executable, "-m", "llama_from_scratch", "generate", "--checkpoint", CKPT, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_text_output_is_only_the_continuation(stories):
    prompt = "Once upon a time, Tom"
    tok = Llama2cTokenizer.from_file(TOK)
    ids = tok.encode(prompt, bos=True)
    assert ids[0] == 1
    want = generate(stories, [ids], 40, temperature=0.0, stop_ids=STOP)[0]
    proc = run_cli("--tokenizer", TOK, "--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tok.decode(want, prev_token=ids[-1]) + "\n"
    assert prompt not in proc.stdout and len(proc.stdout.split()) > 10
    assert "loaded" in proc.stderr and "loaded" not in proc.stdout


def test_print_ids_with_prompt_ids(stories):
    want = generate(stories, [[1, 403, 407]], 25, temperature=0.8, top_k=20, top_p=0.95, seed=7, stop_ids=STOP)[0]
    proc = run_cli("--prompt-ids", "1 403 407", "--print-ids", "--max-new-tokens", "25",
                   "--temperature", "0.8", "--top-k", "20", "--top-p", "0.95", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == " ".join(map(str, want)) + "\n"


def test_defaults_bos_prompt_meta_sampling_fixed_seed(stories, capsys):
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", "--max-new-tokens", "30"]) == 0
    first = capsys.readouterr().out
    want = generate(stories, [[1]], 30, temperature=0.6, top_p=0.9, seed=1, stop_ids=STOP)[0]
    assert first == " ".join(map(str, want)) + "\n"
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", "--max-new-tokens", "30"]) == 0
    assert capsys.readouterr().out == first


def test_prompt_text_is_encoded_with_bos(stories, capsys):
    tok = Llama2cTokenizer.from_file(TOK)
    ids = tok.encode("Lily saw a cat", bos=True)
    assert main(["generate", "--checkpoint", CKPT, "--tokenizer", TOK, "--prompt", "Lily saw a cat",
                 "--print-ids", "--temperature", "0", "--max-new-tokens", "20"]) == 0
    want = generate(stories, [ids], 20, temperature=0.0, stop_ids=STOP)[0]
    assert capsys.readouterr().out == " ".join(map(str, want)) + "\n"


def test_default_tokenizer_is_tokenizer_model_beside_the_checkpoint(tmp_path, capsys):
    (tmp_path / "model.bin").symlink_to(CKPT)
    assert main(["generate", "--checkpoint", str(tmp_path / "model.bin"), "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.model" in err and "--tokenizer" in err
    (tmp_path / "tokenizer.model").symlink_to(TOK)  # content decides the format: llama2.c's here
    assert main(["generate", "--checkpoint", str(tmp_path / "model.bin"), "--max-new-tokens", "20",
                 "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out.split()) > 3


def test_context_length_note(stories, capsys):
    prompt = [1] + [300] * 504  # 505 of 512 positions
    want = generate(stories, [prompt], 100, temperature=0.0, stop_ids=STOP)[0]
    assert len(want) == 7
    assert main(["generate", "--checkpoint", CKPT, "--prompt-ids", " ".join(map(str, prompt)),
                 "--print-ids", "--temperature", "0", "--max-new-tokens", "100"]) == 0
    out = capsys.readouterr()
    assert out.out == " ".join(map(str, want)) + "\n"
    assert "context length of 512" in out.err


@pytest.mark.parametrize("args, words", [
    (["--prompt", "hi", "--prompt-ids", "1 2"], "not both"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"),
    (["--top-k", "0"], "top_k"),
    (["--prompt-ids", "1 x"], "integers"),
    (["--prompt-ids", "1 600"], "0..511"),
    (["--prompt-ids", " ".join(["1"] * 513)], "context length of 512"),
    (["--tokenizer", CKPT, "--prompt", "hi"], "neither"),
])
def test_bad_input_is_one_line_on_stderr(args, words, capsys):
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("error:") or "loaded" in out.err
    assert words in out.err


def test_bad_checkpoint_subprocess(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(open(CKPT, "rb").read()[:1000])
    proc = run_cli("--checkpoint", str(bad), "--print-ids")  # the later --checkpoint wins
    assert proc.returncode == 2 and proc.stdout == ""
    assert "1,000 bytes" in proc.stderr and "dim=64" in proc.stderr
