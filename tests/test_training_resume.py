"""Exact resume: a run SIGKILLed at random moments, several times, and resumed each time ends
with weights bitwise equal to a run that was never interrupted (same machine, same threads).

Saving every step makes many kills land inside a save, the case atomic writes exist for."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from llama_from_scratch import datafiles

STEPS = 90
ARGS = ["--vocab-size", "400", "--dim", "32", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2",
        "--seq-len", "32", "--batch-size", "8", "--grad-accum", "2", "--lr", "3e-3", "--warmup-steps", "4",
        "--eval-every", "6", "--eval-batches", "2", "--save-every", "1", "--max-steps", str(STEPS)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    corpus = root / "shakespeare.txt"
    corpus.write_text(datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache"), "OMP_NUM_THREADS": "1",
           "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    return root, corpus, env


def command(corpus, out, *extra):
    return [sys.executable, "-m", "llama_from_scratch", "train", "--data", str(corpus), "--out", str(out),
            *ARGS, *extra]


def logged_steps(folder):
    """The last step in metrics.jsonl (0 when there is none yet)."""
    try:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return len([line for line in lines if line.endswith("}")])


def weights(folder):
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    return state["step"], state["model"], state["optimizer"]


def test_killed_and_resumed_equals_uninterrupted(setup):
    root, corpus, env = setup
    straight = subprocess.run(command(corpus, root / "straight"), env=env, capture_output=True, text=True,
                              timeout=600)
    assert straight.returncode == 0, straight.stderr

    rng = random.Random(0)
    out, kills = root / "killed", []
    targets = [rng.randint(5, 25), rng.randint(35, 55), rng.randint(65, 80)]  # steps to kill after
    for attempt in range(8):
        resume = (out / "checkpoint.pt").exists()
        proc = subprocess.Popen(command(corpus, out, *(["--resume"] if resume else [])), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if len(kills) < len(targets):
            target = targets[len(kills)]
            while proc.poll() is None and logged_steps(out) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))  # then a random moment: inside a step, or a save
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills.append(logged_steps(out))
                continue
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        break
    assert len(kills) == 3, f"the run finished before it was killed three times (killed at {kills})"
    result, reference = json.loads(stdout), json.loads(straight.stdout)
    assert result.pop("checkpoint") == str(out / "checkpoint.pt")
    assert result == {k: v for k, v in reference.items() if k != "checkpoint"}  # val loss to the last digit

    step_a, model_a, opt_a = weights(root / "straight")
    step_b, model_b, opt_b = weights(out)
    assert step_a == step_b == STEPS
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), f"{key} differs after kills and resumes"
    for i, state in opt_a["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b["state"][i][name]))

    # the metrics log holds each step once, with the same losses as the uninterrupted run
    def losses(folder):
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["train_loss"], r.get("val_loss")) for r in rows]

    assert losses(out) == losses(root / "straight")
    assert not list(out.glob(".checkpoint.pt.*.tmp"))  # a killed save's temp file is removed by the next save
