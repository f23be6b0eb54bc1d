"""`train` and `evaluate` on the command line: the contract outside scripts rely on, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.cli.main import main

SMALL = ["--dim", "32", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--seq-len", "32",
         "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "4", "--eval-every", "5", "--eval-batches", "2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first 60,000 characters of tinyshakespeare: small enough for seconds per run."""
    text = datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000]
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Token caches go to a folder of this test module, not the user's cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def train(corpus, out, *extra):
    tokenizer = [] if "--tokenizer" in extra else ["--vocab-size", "400"]
    return main(["train", "--data", str(corpus), "--out", str(out), *tokenizer, *SMALL, *extra])


def last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, f"stdout must hold only the result line, got {out}"
    return json.loads(out[0])


def test_train_prints_one_json_line_and_evaluate_agrees(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "run", "--max-steps", "12", "--save-every", "6") == 0
    result = last_json(capsys)
    assert set(result) == {"step", "val_loss", "bits_per_byte", "checkpoint"} and result["step"] == 12
    assert (tmp_path / "run" / "checkpoint.pt").is_file() and result["checkpoint"].endswith("checkpoint.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(corpus)]) == 0
    first = capsys.readouterr().out
    evaluated = json.loads(first)
    assert evaluated["loss"] == result["val_loss"] and evaluated["bits_per_byte"] == result["bits_per_byte"]
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(corpus)]) == 0
    assert capsys.readouterr().out == first  # deterministic to the last digit
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert all({"step", "lr", "train_loss", "tokens_per_s", "grad_norm"} <= set(r) for r in steps)
    assert [r["step"] for r in steps if "val_loss" in r] == [5, 10, 12]
    assert steps[-1]["train_loss"] < steps[0]["train_loss"]  # it learns
    # bits per byte: nats/token -> bits/byte with the validation split's bytes per token
    assert 0 < result["bits_per_byte"] < result["val_loss"] / 0.693


def test_resume_after_the_end_prints_the_line_again(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "run", "--max-steps", "6") == 0
    first = last_json(capsys)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--resume"]) == 0
    assert last_json(capsys) == first
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_generate_reads_a_training_directory(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "run", "--max-steps", "4") == 0
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "ROMEO:", "--max-new-tokens",
                 "20", "--temperature", "0", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.endswith("\n") and len(text) > 1


@pytest.mark.parametrize("extra, message", [
    (["--batch-size", "8", "--grad-accum", "3"], "not divisible"),
    (["--seq-len", "100000"], "one context window of 100000 tokens needs 100001"),
    (["--tokenizer", "/no/such/tokenizer.model"], "/no/such/tokenizer.model"),
    (["--resume"], "holds no checkpoint"),
])
def test_bad_input_exits_2_with_one_clear_line(corpus, tmp_path, capsys, extra, message):
    assert train(corpus, tmp_path / "run", "--max-steps", "4", *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith("error:"), err


def test_no_silent_overwrite_and_resume_must_match(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "run", "--max-steps", "4") == 0
    assert train(corpus, tmp_path / "run", "--max-steps", "4") == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--resume", "--lr", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "lr: 0.003 -> 0.5" in err
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text()[::-1], encoding="utf-8")
    assert main(["train", "--data", str(other), "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "text_sha256" in capsys.readouterr().err


def test_corrupt_checkpoint_is_an_error_never_a_restart(corpus, tmp_path, capsys):
    assert train(corpus, tmp_path / "run", "--max-steps", "4") == 0
    path = tmp_path / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(corpus)]) == 2


def test_unwritable_output_folder(corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert train(corpus, blocker / "run", "--max-steps", "4") == 2
    assert "cannot write to the output folder" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_exits_2(corpus, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"], "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "llama_from_scratch", "train", "--data", str(corpus), "--out",
           str(tmp_path / "run"), "--vocab-size", "400", *SMALL, "--max-steps", "400"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "run" / ".lock"
        for _ in range(600):  # wait until the first run holds the lock (it writes its pid there)
            if lock.exists() and lock.read_text().strip():
                break
            first.poll()
            assert first.returncode is None, first.stderr.read()
            time.sleep(0.05)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by a running training" in second.stderr
        assert second.stdout == ""
    finally:
        first.kill()
        first.wait()
    # the killed run's lock does not stay stuck
    again = subprocess.run(cmd[:-2] + ["--max-steps", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert "in use" not in again.stderr


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    # lr 1e30: the first step makes the weights ~1e30, the next forward pass overflows to inf/nan
    assert train(corpus, tmp_path / "hot", "--max-steps", "30", "--save-every", "1", "--lr", "1e30",
                 "--warmup-steps", "0") == 2
    err = capsys.readouterr().err
    assert "the training loss became" in err and "last good checkpoint is step" in err
    saved = torch.load(tmp_path / "hot" / "checkpoint.pt", weights_only=True)
    step = int(err.split("last good checkpoint is step ")[1].split()[0])
    assert saved["step"] == step >= 1
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
