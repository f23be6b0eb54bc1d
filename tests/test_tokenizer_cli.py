"""`python -m llama_from_scratch tokenize`, run as a real subprocess."""

import json
import os
import subprocess
import sys

import pytest
import sentencepiece as spm

from llama_from_scratch import datafiles

CMD = [sys.executable, "-m", "llama_from_scratch", "tokenize"]


@pytest.fixture(scope="module")
def model():
    return str(datafiles.path("llama2_tokenizer.model"))


@pytest.fixture(scope="module")
def sp(model):
    return spm.SentencePieceProcessor(model_file=model)


def tokenize(args, stdin: bytes):
    return subprocess.run(CMD + args, input=stdin, capture_output=True, timeout=60, env=os.environ)


def test_plain_lines(model, sp):
    lines = ["Hello world", "", "  indented\tcode", "caf\u00e9 \u4f60\u597d \U0001f468\u200d\U0001f469\u200d\U0001f467", "CRLF\r"]
    got = tokenize(["--tokenizer", model], "\n".join(lines).encode() + b"\n")
    assert got.returncode == 0 and got.stderr == b""
    out = got.stdout.decode().split("\n")
    assert out[-1] == "" and len(out) == len(lines) + 1
    assert [[int(i) for i in line.split()] for line in out[:-1]] == sp.encode(lines)


def test_last_line_without_newline_and_bos_eos(model, sp):
    got = tokenize(["--tokenizer", model, "--bos", "--eos"], b"a b\nHello")
    assert got.stdout.decode() == " ".join(map(str, sp.encode("a b", add_bos=True, add_eos=True))) + "\n" + \
        " ".join(map(str, sp.encode("Hello", add_bos=True, add_eos=True))) + "\n"


def test_default_tokenizer_is_llama2(sp):
    got = tokenize([], b"Hello world\n")
    assert got.stdout == b"15043 3186\n" and sp.encode("Hello world") == [15043, 3186]


def test_jsonl_both_ways(model, sp):
    texts = ["line one\nline two", " ", "tab\t\u2581"]
    got = tokenize(["--tokenizer", model, "--jsonl"], "".join(json.dumps(t) + "\n" for t in texts).encode())
    ids = [json.loads(line) for line in got.stdout.decode().splitlines()]
    assert ids == sp.encode(texts)
    back = tokenize(["--tokenizer", model, "--jsonl", "--decode"], "".join(json.dumps(i) + "\n" for i in ids).encode())
    assert [json.loads(line) for line in back.stdout.decode().splitlines()] == [sp.decode(i) for i in ids]


def test_decode_plain(model):
    got = tokenize(["--tokenizer", model, "--decode"], b"15043 3186\n\n1 15043 2\n")
    assert got.stdout.decode() == "Hello world\n\nHello\n"


def test_llama2c_bin_tokenizer():
    path = str(datafiles.path("stories260K/tok512.bin"))
    got = tokenize(["--tokenizer", path, "--bos"], b"Once upon a time\n")
    assert got.stdout == b"1 403 407 261 378\n"
    back = tokenize(["--tokenizer", path, "--decode"], b"403 407 261 378\n")
    assert back.stdout == b"Once upon a time\n"


@pytest.mark.parametrize("args, stdin, message", [
    ([], b"fine\nbad \xff byte\n", b"line 2 is not valid UTF-8"),
    (["--decode"], b"15043 32000\n", b"32000"),
    (["--decode"], b"12 x\n", b"integers"),
    (["--jsonl"], b'"\\ud800"\n', b"surrogate"),
    (["--jsonl"], b"[1, 2]\n", b"JSON string"),
    (["--jsonl"], b"not json\n", b"not JSON"),
    (["--tokenizer", "/no/such/tokenizer.model"], b"x\n", b"/no/such/tokenizer.model"),
    (["--tokenizer", __file__], b"x\n", b"test_tokenizer_cli.py"),
    (["--decode", "--bos"], b"1\n", b"--bos"),
])
def test_errors_go_to_stderr_with_status_2(sp, args, stdin, message):
    got = tokenize(args, stdin)
    assert got.returncode == 2
    assert message in got.stderr and got.stderr.startswith(b"error: ")
    assert b"error" not in got.stdout and b"Traceback" not in got.stderr
    if stdin.startswith(b"fine"):
        assert got.stdout == f"{sp.encode('fine')[0]}\n".encode()  # lines before the bad one were answered


def test_jsonl_answers_each_line_before_stdin_closes(model, sp):
    proc = subprocess.Popen(CMD + ["--tokenizer", model, "--jsonl"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for text in ["first question", "second"]:
            proc.stdin.write((json.dumps(text) + "\n").encode())
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline()) == sp.encode(text)  # would hang without flushing
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        proc.stdout.close()
        proc.stderr.close()
