"""The training loop through its Python API (training.loop): gradient accumulation, bfloat16
autocast, LLaMA 2's optimizer settings and where weight decay goes, and evaluation. Tiny models,
seconds; every check compares numbers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llama_from_scratch import datafiles
from llama_from_scratch.cli.main import main
from llama_from_scratch.model.config import preset
from llama_from_scratch.training.batches import BatchSampler
from llama_from_scratch.training.loop import evaluate, train_step
from llama_from_scratch.training.optimizer import AdamW, param_groups
from llama_from_scratch.training.run import TrainSettings
from llama_from_scratch.training.schedule import lr_at
from llama_from_scratch.training.setup import build_model

ARGS = preset("tiny")  # dim 64, 2 layers, 8 heads / 4 KV heads, vocab 512
SEQ = 32


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: the same reductions in the same order on every run, and a fair share of a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tokens(n: int = 6000, period: int = 97, seed: int = 0) -> np.ndarray:
    """A learnable stream: one random phrase of `period` ids, repeated, stored as uint16 like a TokenFile."""
    phrase = np.random.default_rng(seed).integers(0, ARGS.vocab_size, period)
    return np.resize(phrase, n).astype(np.uint16)


def setup(settings: TrainSettings, data: np.ndarray, seed: int = 0):
    """Model, optimizer and sampler built as `cli/train.py` builds them."""
    model = build_model(ARGS, seed, torch.device("cpu"))
    optimizer = AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                      betas=(settings.beta1, settings.beta2), eps=settings.eps, weight_decay=settings.weight_decay)
    sampler = BatchSampler(data, settings.seq_len, settings.micro_batch, seed + 1)
    return model, optimizer, sampler


def recording(sampler: BatchSampler) -> list[torch.Tensor]:
    """Make `sampler` remember every x it hands out."""
    seen, draw = [], sampler.next

    def next_batch():
        x, y = draw()
        seen.append(x)
        return x, y

    sampler.next = next_batch
    return seen


# --- gradient accumulation --------------------------------------------------------------------

def test_grad_accum_2x4_equals_1x8_same_windows_loss_and_weights():
    data = tokens()
    base = TrainSettings(seq_len=SEQ, batch_size=8, max_steps=10, warmup_steps=2, lr=3e-3)
    runs = {}
    for accum in (1, 2):
        settings = replace(base, grad_accum=accum)
        model, optimizer, sampler = setup(settings, data)
        seen = recording(sampler)
        losses = [train_step(model, optimizer, sampler, settings, step)["train_loss"] for step in range(4)]
        runs[accum] = (torch.cat(seen), losses, model.state_dict())
    (x1, losses1, w1), (x2, losses2, w2) = runs[1], runs[2]
    # The sampler draws each start in turn: 8 starts at once are the 4 + 4 of two micro-batches.
    assert x1.shape == x2.shape == (4 * 8, SEQ) and torch.equal(x1, x2)
    # float32: the same sums grouped differently differ by rounding only. Seen: losses 9e-8
    # relative, weights 1.2e-7 absolute (2 x 4 and 4 x 2); the tolerances leave ~10x margin.
    assert losses1[-1] < losses1[0] - 0.1  # the steps did something
    np.testing.assert_allclose(losses2, losses1, rtol=1e-6, atol=0)
    start = build_model(ARGS, 0, torch.device("cpu")).state_dict()
    for name in w1:
        np.testing.assert_allclose(w2[name].numpy(), w1[name].numpy(), rtol=0, atol=1e-6, err_msg=name)
    moved = max((w1[name] - start[name]).abs().max().item() for name in w1)
    assert moved > 1e-3  # 4 steps at lr 3e-3 move weights by ~1e-2: 1e-6 is a tight tolerance


# --- bfloat16 autocast ------------------------------------------------------------------------

def test_bfloat16_autocast_trains_and_keeps_weights_and_optimizer_state_in_float32():
    data = tokens()
    settings = TrainSettings(seq_len=SEQ, batch_size=8, max_steps=30, warmup_steps=3, lr=3e-3, dtype="bfloat16")
    model, optimizer, sampler = setup(settings, data)
    losses = [train_step(model, optimizer, sampler, settings, step)["train_loss"] for step in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses  # ln(512) = 6.2 at the start; the phrase is learnable
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    for state in optimizer.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    assert len(optimizer.state) == len(list(model.parameters()))
    # Autocast really ran in bfloat16: its losses are close to float32's (seen: 6e-6 relative at
    # step 1, 2e-4 at step 30), but not equal to them.
    fp32 = replace(settings, dtype="float32")
    model32, optimizer32, sampler32 = setup(fp32, data)
    losses32 = [train_step(model32, optimizer32, sampler32, fp32, step)["train_loss"] for step in range(30)]
    assert losses[0] != losses32[0] and abs(losses[0] - losses32[0]) < 1e-3 * losses32[0]
    assert abs(losses[-1] - losses32[-1]) < 0.05 * losses32[-1]


# --- LLaMA 2's settings and where weight decay goes -------------------------------------------

def test_defaults_are_llama2s():
    s = TrainSettings()
    assert (s.beta1, s.beta2, s.eps, s.weight_decay, s.clip, s.final_lr_ratio) == (0.9, 0.95, 1e-5, 0.1, 1.0, 0.1)
    defaults = AdamW(torch.nn.Linear(2, 2).parameters()).defaults
    assert defaults["betas"] == (0.9, 0.95) and defaults["eps"] == 1e-5 and defaults["weight_decay"] == 0.1
    assert lr_at(s.max_steps, s.lr, s.warmup_steps, s.max_steps, s.final_lr_ratio) == pytest.approx(0.1 * s.lr)


def test_weight_decay_reaches_exactly_the_matrices_in_a_train_step():
    """One step with weight decay 0.1 against the same step with 0: the gradients and the Adam
    update are the same, so the difference is the decay alone, `-lr * wd * p`, where it applies."""
    data = tokens()
    settings = TrainSettings(seq_len=SEQ, batch_size=4, max_steps=10, warmup_steps=0, lr=1e-2)
    before = build_model(ARGS, 0, torch.device("cpu")).state_dict()
    after = {}
    for wd in (0.1, 0.0):
        s = replace(settings, weight_decay=wd)
        model, optimizer, sampler = setup(s, data)
        lr = train_step(model, optimizer, sampler, s, 0)["lr"]
        after[wd] = model.state_dict()
    decayed = set()
    for name, p0 in before.items():
        diff = after[0.1][name] - after[0.0][name]
        if torch.equal(diff, torch.zeros_like(diff)):
            continue
        decayed.add(name)
        torch.testing.assert_close(diff, -lr * 0.1 * p0, rtol=1e-3, atol=1e-8, msg=name)
    matrices = {n for n in before if n.endswith(("wq.weight", "wk.weight", "wv.weight", "wo.weight", "w1.weight",
                                                 "w2.weight", "w3.weight")) or n == "output.weight"}
    assert len(matrices) == 7 * ARGS.n_layers + 1
    assert decayed == matrices  # not the RMSNorm gains, not tok_embeddings


def test_the_cli_builds_the_optimizer_with_llama2s_settings(tmp_path, monkeypatch, capsys):
    """The checkpoint of a 1-step CLI run: its optimizer's groups say what was decayed, and how."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    corpus = tmp_path / "shakespeare.txt"
    corpus.write_text(datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    assert main(["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--vocab-size", "400",
                 "--dim", "32", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--seq-len", "32",
                 "--batch-size", "4", "--warmup-steps", "0", "--max-steps", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 1
    groups = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-5 for g in groups)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    assert set(by_decay) == {0.1, 0.0}
    assert by_decay[0.0] == {"tok_embeddings.weight", "norm.weight"} | {
        f"layers.{i}.{n}_norm.weight" for i in range(2) for n in ("attention", "ffn")}
    assert "output.weight" in by_decay[0.1] and all(n.endswith(".weight") for n in by_decay[0.1])
    assert len(by_decay[0.1]) == 7 * 2 + 1


# --- evaluation -------------------------------------------------------------------------------

def test_evaluate_is_deterministic_and_equals_a_by_hand_mean_of_f_cross_entropy():
    data = tokens(n=3000, seed=1)
    settings = TrainSettings(seq_len=SEQ, batch_size=8, grad_accum=2, max_steps=10, warmup_steps=1)
    model, optimizer, sampler = setup(settings, tokens())
    for step in range(3):  # trained a little: not the initial weights
        train_step(model, optimizer, sampler, settings, step)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss, count = evaluate(model, data, settings, n_batches=5)
    torch.rand(100)  # the global RNG moves: evaluation must not depend on it
    again, count_again = evaluate(model, data, settings, n_batches=5)
    assert (again, count_again) == (loss, count)  # to the last bit
    assert model.training and all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # By hand: windows k = 0 .. 19 (5 batches of micro_batch 4) from the start, each on its own.
    assert count == 5 * 4 * SEQ
    model.eval()
    with torch.no_grad():
        per_window = [F.cross_entropy(model(torch.from_numpy(data[k * SEQ:k * SEQ + SEQ].astype(np.int64))[None])[0],
                                      torch.from_numpy(data[k * SEQ + 1:k * SEQ + SEQ + 1].astype(np.int64)))
                      for k in range(20)]
    by_hand = torch.stack(per_window).double().mean().item()
    assert loss == pytest.approx(by_hand, rel=1e-6)  # batched against one window at a time: rounding only
    everything, n_all = evaluate(model, data, settings)  # None: every full batch
    assert n_all == ((len(data) - 1) // SEQ // 4) * 4 * SEQ and everything != loss
