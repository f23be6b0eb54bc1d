"""The pieces of distributed/ that need no process group: the environment torchrun sets, the
backend fallback, the timeout, the optimizer-state layouts, the byte counter, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from llama_from_scratch.distributed.comm_bytes import count_sent
from llama_from_scratch.distributed.parallel import Parallel, indexed_optimizer_state, named_optimizer_state
from llama_from_scratch.distributed.process_group import World, choose_backend, timeout_s, world_from_env
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.optimizer import AdamW, param_groups


def test_world_comes_from_torchruns_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert world_from_env() == World(0, 1, 0) and not world_from_env().is_distributed
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_env()
    assert (world.rank, world.size, world.local_rank, world.is_writer) == (3, 4, 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK 4 is outside"):
        world_from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="must be integers"):
        world_from_env()


def test_nccl_without_a_gpu_falls_back_to_gloo_and_says_so(capsys):
    assert choose_backend("auto", torch.device("cpu")) == "gloo"
    assert choose_backend("nccl", torch.device("cpu")) == "gloo"
    assert "using gloo" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown backend 'mpi'"):
        choose_backend("mpi", torch.device("cpu"))


def test_timeout_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("LLAMA_DIST_TIMEOUT_S", raising=False)
    assert timeout_s() == 180
    monkeypatch.setenv("LLAMA_DIST_TIMEOUT_S", "7.5")
    assert timeout_s() == 7.5
    for bad in ("0", "soon"):
        monkeypatch.setenv("LLAMA_DIST_TIMEOUT_S", bad)
        with pytest.raises(ValueError, match="positive number of seconds"):
            timeout_s()


def test_optimizer_state_by_name_and_back_is_pytorchs_own():
    model = Transformer(preset("tiny"))
    optimizer = AdamW(param_groups(model, 0.1), lr=1e-3)
    model(torch.randint(0, 512, (2, 8))).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()
    named = named_optimizer_state(state)
    assert set(named["state"]) == {n for n, _ in model.named_parameters()}
    assert torch.equal(named["state"]["layers.1.attention.wk.weight"]["exp_avg"],
                       optimizer.state[model.layers[1].attention.wk.weight]["exp_avg"])
    back = indexed_optimizer_state(named)
    assert back["param_groups"] == state["param_groups"]
    assert all(torch.equal(back["state"][i]["exp_avg_sq"], s["exp_avg_sq"]) for i, s in state["state"].items())
    fresh = AdamW(param_groups(model, 0.1), lr=1e-3)
    fresh.load_state_dict(back)  # PyTorch accepts it as its own


def test_the_ranks_share_a_batch_in_equal_consecutive_rows():
    x, y = torch.arange(16).view(8, 2), torch.arange(16).view(8, 2) + 100
    parts = [Parallel(World(rank, 4)).share(x, y) for rank in range(4)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    Parallel(World(0, 4)).check_batch(8)
    with pytest.raises(ValueError, match="does not divide among 4 ranks.*holds 6 sequences"):
        Parallel(World(0, 4)).check_batch(6)


def test_the_byte_counter_sees_what_the_process_writes(tmp_path):
    payload = os.urandom(1 << 20)
    with open(tmp_path / "f", "wb", buffering=0) as f, count_sent() as sent:
        f.write(payload)
    assert sent.bytes == len(payload)


def test_generate_under_torchrun_needs_metas_format():
    from llama_from_scratch import datafiles

    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "llama_from_scratch", "generate", "--checkpoint",
                           str(datafiles.path("stories260K/stories260K.bin")), "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert "must be in Meta's format" in done.stderr
