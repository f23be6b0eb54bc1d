"""Chapter 13 on real process groups: 2 and 4 gloo processes on the CPU, launched by torchrun.

Compared with one process on the same data: DDP's and FSDP's gradients (float32 tolerance
stated below), the weights after several training steps through the CLI, resuming on another
number of ranks, FSDP's per-rank memory against 16 bytes per parameter / N, tensor-parallel
logits (1e-5) and greedy ids, and the bytes the kernel saw each rank send against the cost
model. Then the bad input: a batch or a model the ranks cannot split, a rank that dies, NCCL
asked for on a machine without GPUs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llama_from_scratch.distributed import cost_model
from llama_from_scratch.distributed.tensor_parallel_load import check_divides, files_for_rank
from llama_from_scratch.model.config import preset
from llama_from_scratch.training.checkpoint import load_state

ROOT = Path(__file__).resolve().parent.parent
WORKER = ["-m", "llama_from_scratch.distributed.live_checks"]
# The gradient of a mean over 8 rows vs the mean of two ranks' means over 4: the same sums in
# another order, so they agree to float32 rounding: |difference| <= 1e-6 x the largest gradient.
GRAD_RTOL = 1e-6
WEIGHTS_ATOL = 1e-5  # after 6 AdamW steps: rounding differences, amplified a little by Adam's division


def torchrun_env(env: dict | None = None) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **(env or {})}


def torchrun(n: int, *args: str, timeout: float = 240, env: dict | None = None,
             stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                           str(n), *args], capture_output=True, text=True, timeout=timeout, env=torchrun_env(env),
                          input=stdin)


def torchrun_to_kill(*args: str, env: dict | None = None) -> subprocess.Popen:
    """torchrun on 2 ranks, left running (stdin, stdout, stderr piped) for a test to stop a rank.

    torchrun looks at its workers every 5 s here (0.1 s by default), so that the survivor's own
    error, not torchrun stopping it first, is what ends the run."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--monitor-interval",
                             "5", "--nproc-per-node", "2", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=torchrun_env(env))


def train_args(out: Path, text: Path, *extra: str) -> list[str]:
    return ["-m", "llama_from_scratch", "train", "--data", str(text), "--out", str(out), "--vocab-size", "400",
            "--batch-size", "8", "--seq-len", "32", "--warmup-steps", "2", "--eval-every", "3", "--save-every",
            "3", "--eval-batches", "2", "--dim", "32", "--n-heads", "4", "--n-kv-heads", "2", *extra]


def single(args: list[str], timeout: float = 240, stdin: str | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=environment,
                          input=stdin)


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from llama_from_scratch import datafiles

    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:120_000], encoding="utf-8")
    return path


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_state(folder / "checkpoint.pt")["model"]


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def grads(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("grads") / "grads.json"
    done = torchrun(2, *WORKER, "grads", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("how", ["ddp", "fsdp"])
def test_gradients_equal_one_process_on_the_global_batch(grads, how):
    result = grads[how]
    assert result["max_grad"] > 1e-3  # a real gradient, not zeros
    assert result["max_grad_diff"] <= GRAD_RTOL * result["max_grad"], result
    assert result["mean_loss"] == pytest.approx(grads["reference_loss"], rel=1e-6)
    # clipping: the global norm over every rank's gradients (shards, for FSDP), then the same scaling
    assert result["grad_norm"] == pytest.approx(result["reference_grad_norm"], rel=1e-6)
    assert result["reference_grad_norm"] > 0.1  # above the clip level of the check: clipping acted
    assert result["max_clipped_diff"] <= GRAD_RTOL * result["max_grad"], result


def test_collectives_send_what_the_ring_formulas_say(tmp_path):
    """gloo's all-reduce and all-gather send the ring's bytes; its reduce-scatter sends as much as
    an all-reduce (it reduces everything, then keeps its part), twice the ring's."""
    out = tmp_path / "collectives.json"
    done = torchrun(2, *WORKER, "collectives", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    size, world = result["tensor_bytes"], result["world"]
    for name, formula in [("all_reduce", cost_model.all_reduce_bytes(size, world)),
                          ("all_gather", cost_model.all_gather_bytes(size, world)),
                          ("reduce_scatter", cost_model.all_reduce_bytes(size, world))]:
        assert all(1.0 <= sent / formula < 1.001 for sent in result[name]), (name, result[name], formula)


def test_fsdp_memory_per_rank_is_16_bytes_per_parameter_over_n(grads):
    n, world = grads["n_params"], grads["world"]
    fsdp, ddp = grads["fsdp"]["bytes_per_rank"], grads["ddp"]["bytes_per_rank"]
    assert sum(fsdp.values()) == cost_model.adamw_bytes_per_rank(n, world, sharded=True)  # dims divide: exact
    assert sum(ddp.values()) == cost_model.adamw_bytes_per_rank(n, world, sharded=False)
    assert fsdp["optimizer"] == 2 * fsdp["parameters"] == 2 * 4 * n / world


def test_bytes_sent_match_the_cost_model(grads):
    """The kernel's count of what a rank wrote vs the ring formulas: within 1% (headers are the rest)."""
    n, world = grads["n_params"], grads["world"]
    ddp = cost_model.ddp_step_bytes(n, world)
    assert 1.0 <= grads["ddp"]["sent"] / ddp < 1.01, (grads["ddp"]["sent"], ddp)
    # FSDP2 keeps the root's own parameters (embedding, norm, output) gathered between forward and
    # backward, and gloo's reduce-scatter sends what an all-reduce does (measured in the chapter).
    args = preset("tiny", dim=64, n_heads=8, n_kv_heads=4, vocab_size=512)
    root = 2 * args.vocab_size * args.dim + args.dim
    fsdp = (cost_model.all_gather_bytes(4 * n, world) + cost_model.all_gather_bytes(4 * (n - root), world)
            + cost_model.all_reduce_bytes(4 * n, world))
    assert 1.0 <= grads["fsdp"]["sent"] / fsdp < 1.01, (grads["fsdp"]["sent"], fsdp)


@pytest.fixture(scope="module")
def meta_checkpoints(tmp_path_factory) -> dict[int, Path]:
    from llama_from_scratch.checkpoints.meta_format import save_meta
    from llama_from_scratch.model.transformer import Transformer

    model = Transformer(preset("tiny", dim=64, n_heads=8, n_kv_heads=4, vocab_size=512, max_seq_len=64))
    model.init_weights(torch.Generator().manual_seed(3))
    root = tmp_path_factory.mktemp("meta")
    out = {}
    for shards in (1, 2, 4):
        save_meta(model, root / f"shards{shards}", n_shards=shards)
        out[shards] = root / f"shards{shards}"
    return out


@pytest.mark.parametrize("world,shards", [(2, 2), (4, 2), (2, 4), (4, 1)])
def test_tensor_parallel_equals_one_process(meta_checkpoints, tmp_path, world, shards):
    out = tmp_path / "tp.json"
    done = torchrun(world, *WORKER, "tp", str(meta_checkpoints[shards]), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["max_logit_diff"] <= 1e-5
    assert result["greedy"] == result["greedy_reference"]
    assert all(s == result["sampled_per_rank"][0] for s in result["sampled_per_rank"])  # rank 0's tokens
    assert result["sliced_bytes"] * world == result["total_sliced_bytes"]
    args = preset("tiny", dim=64, n_heads=8, n_kv_heads=4, vocab_size=512)
    expected = cost_model.tp_forward_bytes(args.dim, args.n_layers, args.vocab_size, result["tokens"], world)
    assert 1.0 <= result["sent"] / expected < 1.03, (result["sent"], expected)


def test_generate_under_torchrun_prints_once_and_matches(meta_checkpoints):
    flags = ["--checkpoint", str(meta_checkpoints[2]), "--prompt-ids", "1 5 7", "--print-ids",
             "--max-new-tokens", "8", "--device", "cpu"]
    alone = single(["-m", "llama_from_scratch", "generate", *flags, "--temperature", "0"])
    assert alone.returncode == 0, alone.stderr
    ranks = torchrun(2, "-m", "llama_from_scratch", "generate", *flags, "--temperature", "0")
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    assert ranks.stdout == alone.stdout and len(alone.stdout.split()) == 8


def chat_flags(checkpoint: Path) -> list[str]:
    from llama_from_scratch import datafiles

    return ["--checkpoint", str(checkpoint), "--tokenizer", str(datafiles.path("stories260K/tok512.bin")),
            "--temperature", "0", "--max-new-tokens", "6", "--device", "cpu"]


def test_chat_under_torchrun_reads_rank_0s_stdin_and_answers_as_one_process(meta_checkpoints):
    flags = chat_flags(meta_checkpoints[2])
    lines = "Tell me a story\n/reset\nagain\n"
    alone = single(["-m", "llama_from_scratch", "chat", *flags], stdin=lines)
    assert alone.returncode == 0, alone.stderr
    ranks = torchrun(2, "-m", "llama_from_scratch", "chat", *flags, stdin=lines)
    assert ranks.returncode == 0, ranks.stderr[-2000:]
    assert ranks.stdout == alone.stdout and len(alone.stdout.splitlines()) == 2  # two answers, printed once
    assert ranks.stderr.count("(new dialog)") == 1


def worker_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The process id of torchrun's worker for `rank` (its children, told apart by RANK=)."""
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    environs = {int(pid): b"\0" + Path(f"/proc/{pid}/environ").read_bytes() for pid in workers}
    return next(pid for pid, environ in environs.items() if f"\0RANK={rank}\0".encode() in environ)


def test_chat_stops_with_one_line_when_a_rank_dies(meta_checkpoints):
    launcher = torchrun_to_kill("-m", "llama_from_scratch", "chat", *chat_flags(meta_checkpoints[2]))
    try:
        launcher.stdin.write("Tell me a story\n")
        launcher.stdin.flush()
        assert launcher.stdout.readline(), "no first answer"  # both ranks are up and waiting for a line
        os.kill(worker_pid(launcher, rank=1), signal.SIGKILL)
        time.sleep(0.5)
        _, stderr = launcher.communicate("again\n", timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    lost = re.search(r"error: rank 0 lost the other ranks \(.*Connection (reset|closed) by peer", stderr)
    assert lost, stderr[-3000:]
    assert "llama_from_scratch/" not in stderr, stderr[-3000:]  # no traceback through the package's files


def test_a_world_that_cannot_split_the_model_is_named():
    args = preset("tiny", dim=64, n_heads=8, n_kv_heads=4, vocab_size=512)
    with pytest.raises(ValueError, match=r"3 does not divide n_heads 8, n_kv_heads 4.*Run with 1 or 2 or 4"):
        check_divides(args, 3)
    check_divides(args, 4)
    assert files_for_rank(8, 1, 2) == ([4, 5, 6, 7], 1, 0)  # two ranks serving 70B's 8 files
    assert files_for_rank(1, 3, 4) == ([0], 4, 3)
    with pytest.raises(Exception, match="2 model-parallel shards and there are 3 ranks"):
        files_for_rank(2, 0, 3)


def test_training_on_two_ranks_matches_one_and_resumes_on_another_count(text, tmp_path):
    import shutil

    from llama_from_scratch.checkpoints.load import load_model

    alone = single(train_args(tmp_path / "one", text, "--max-steps", "6"))
    assert alone.returncode == 0, alone.stderr[-2000:]
    ddp = torchrun(2, *train_args(tmp_path / "ddp", text, "--max-steps", "6", "--backend", "nccl"))
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "using gloo" in ddp.stderr  # NCCL without a GPU: the fallback says so
    assert len(ddp.stdout.strip().splitlines()) == 1  # rank 0 alone prints the result
    assert max_diff(weights(tmp_path / "ddp"), weights(tmp_path / "one")) <= WEIGHTS_ATOL
    assert json.loads(ddp.stdout)["val_loss"] == pytest.approx(json.loads(alone.stdout)["val_loss"], abs=1e-5)
    # Resuming: a run of 3 steps continued to 6 (a longer --max-steps stretches the cosine, so the
    # reference is the same continuation in one process), once on 1 rank and once on 2 FSDP ranks;
    # and a run of 3 steps on 2 DDP ranks continued by one process.
    for name, ranks in (("first_one", 1), ("first_ddp", 2)):
        flags = train_args(tmp_path / name, text, "--max-steps", "3")
        done = single(flags) if ranks == 1 else torchrun(2, *flags)
        assert done.returncode == 0, done.stderr[-2000:]
    shutil.copytree(tmp_path / "first_one", tmp_path / "then_fsdp")
    resumed = {}
    for name, ranks in (("first_one", 1), ("then_fsdp", 2), ("first_ddp", 1)):
        flags = train_args(tmp_path / name, text, "--max-steps", "6", "--resume", "--parallel", "fsdp")
        done = single(flags) if ranks == 1 else torchrun(2, *flags)
        assert done.returncode == 0, done.stderr[-2000:]
        resumed[name] = json.loads(done.stdout)
    for name in ("then_fsdp", "first_ddp"):
        assert max_diff(weights(tmp_path / name), weights(tmp_path / "first_one")) <= WEIGHTS_ATOL
        assert resumed[name]["val_loss"] == pytest.approx(resumed["first_one"]["val_loss"], abs=1e-5)
    lines = [json.loads(line) for line in (tmp_path / "then_fsdp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4, 5, 6]  # logged once, by rank 0
    load_model(tmp_path / "then_fsdp")  # FSDP's checkpoint loads in one process, like any training folder


def test_a_batch_the_ranks_cannot_share_is_refused(text, tmp_path):
    done = torchrun(2, *train_args(tmp_path / "odd", text, "--max-steps", "2", "--batch-size", "6",
                                   "--grad-accum", "2"))
    assert done.returncode != 0
    assert "does not divide among 2 ranks" in done.stderr and "micro-batch holds 3" in done.stderr
    assert not (tmp_path / "odd" / "checkpoint.pt").exists() and not (tmp_path / "odd" / "run.json").exists()


def run_and_stop_rank_1(text: Path, out: Path, sig: int, timeout_s: int) -> tuple[int, float, str]:
    """Train on 2 ranks until the first checkpoint, send `sig` to rank 1, wait for the launcher:
    (its exit status, seconds from the signal to its exit, its stderr)."""
    launcher = torchrun_to_kill(*train_args(out, text, "--max-steps", "100000", "--save-every", "5"),
                                env={"LLAMA_DIST_TIMEOUT_S": str(timeout_s)})
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (out / "checkpoint.pt").exists(), "the run never saved a checkpoint"
        victim = worker_pid(launcher, rank=1)
        start = time.time()
        os.kill(victim, sig)
        _, stderr = launcher.communicate(timeout=120)
        return launcher.returncode, time.time() - start, stderr
    finally:
        if launcher.poll() is None:
            launcher.kill()


def check_left_whole(out: Path) -> None:
    state = load_state(out / "checkpoint.pt")  # whole and loadable
    assert state["step"] % 5 == 0 and state["step"] >= 5
    assert not list(out.glob(".*.tmp"))


def test_a_dying_rank_stops_the_others_at_once_and_leaves_the_checkpoint_whole(text, tmp_path):
    code, seconds, stderr = run_and_stop_rank_1(text, tmp_path / "dies", signal.SIGKILL, timeout_s=30)
    assert code != 0 and seconds < 20, (code, seconds)  # its sockets close: no need to wait for the timeout
    # gloo words it as the side that noticed: "Read error ...: Connection reset by peer" when it was
    # reading, "Connection closed by peer ..." otherwise (both seen here)
    assert re.search(r"error: rank 0 lost the other ranks \((Read error \S+ )?Connection (reset|closed) by peer",
                     stderr), stderr[-3000:]
    assert "resume with --resume" in stderr
    assert ".cc:" not in stderr.split("lost the other ranks")[1].splitlines()[0]  # no backend source tags
    check_left_whole(tmp_path / "dies")


def test_a_hung_rank_stops_the_others_after_the_timeout(text, tmp_path):
    code, seconds, stderr = run_and_stop_rank_1(text, tmp_path / "hangs", signal.SIGSTOP, timeout_s=5)
    # rank 0 gives up after 5 s; torchrun then waits its own 30 s grace for the frozen rank 1
    assert code != 0 and seconds < 60, (code, seconds)
    assert "error: rank 0 lost the other ranks" in stderr and "Timed out" in stderr
    check_left_whole(tmp_path / "hangs")
