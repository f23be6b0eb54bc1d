"""The scale-out cost model against an independent check: a small simulation of ring collectives
that moves chunks between ranks, checks the sums, and counts the bytes each rank sends; the
real model's shapes (hooks) for tensor parallelism; a real AdamW state for memory. Then the
paper-scale numbers against their closed forms and the LLaMA 2 paper's GPU-hours."""

import math

import pytest
import torch

from llama_from_scratch.checkpoints.model_parallel import shard_dim
from llama_from_scratch.distributed.clusters import (A100_80GB, CLUSTERS, H100_SXM, compute_seconds,
                                                     gpus_for_days, memory_plan, step_report,
                                                     training_days)
from llama_from_scratch.distributed.cost_model import (ADAMW_FLOAT32, ADAMW_MIXED, adamw_bytes_per_rank,
                                                       all_gather_bytes, all_reduce_bytes,
                                                       ddp_step_bytes, fsdp_step_bytes,
                                                       reduce_scatter_bytes, tp_forward_bytes)
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.parameters import count_parameters
from llama_from_scratch.model.transformer import Transformer


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def ring_reduce_scatter(inputs):
    """inputs[r]: rank r's 1-D tensor. Step s: rank r sends its running sum of chunk (r - s) to
    rank r + 1, which adds it. Returns (rank r's reduced chunk (r + 1) mod N, bytes sent)."""
    n = len(inputs)
    chunks = [list(x.clone().tensor_split(n)) for x in inputs]
    sent = [0] * n
    for step in range(n - 1):
        messages = [(r, (r - step) % n, chunks[r][(r - step) % n].clone()) for r in range(n)]
        for r, c, payload in messages:  # every rank sends at once, then all receive
            sent[r] += _nbytes(payload)
            chunks[(r + 1) % n][c] = chunks[(r + 1) % n][c] + payload
    return [chunks[r][(r + 1) % n] for r in range(n)], sent


def ring_all_gather(owned, first=0):
    """owned[r]: rank r's chunk, number (r + first) mod N. Step s: rank r passes on the chunk it
    got last (its own at s = 0). Returns (every rank's concatenation, bytes sent)."""
    n = len(owned)
    chunks = [[None] * n for _ in range(n)]
    for r in range(n):
        chunks[r][(r + first) % n] = owned[r].clone()
    sent = [0] * n
    for step in range(n - 1):
        messages = [(r, (r + first - step) % n) for r in range(n)]
        payloads = [chunks[r][c] for r, c in messages]
        for (r, c), payload in zip(messages, payloads):
            sent[r] += _nbytes(payload)
            chunks[(r + 1) % n][c] = payload.clone()
    return [torch.cat(rank) for rank in chunks], sent


def ring_all_reduce(inputs):
    reduced, sent_rs = ring_reduce_scatter(inputs)
    out, sent_ag = ring_all_gather(reduced, first=1)
    return out, [a + b for a, b in zip(sent_rs, sent_ag)]


def _ints(n_ranks, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(-1000, 1000, (size,), generator=g, dtype=torch.int32) for _ in range(n_ranks)]


@pytest.mark.parametrize("n_ranks", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("per_rank", [1, 7])
def test_ring_collectives_match_the_formulas(n_ranks, per_rank):
    size = n_ranks * per_rank
    inputs = _ints(n_ranks, size)
    total = torch.stack(inputs).sum(0)
    out, sent = ring_all_reduce(inputs)
    assert all(torch.equal(o, total) for o in out)
    assert sent == [all_reduce_bytes(4 * size, n_ranks)] * n_ranks
    reduced, sent = ring_reduce_scatter(inputs)
    for r in range(n_ranks):
        assert torch.equal(reduced[r], total.tensor_split(n_ranks)[(r + 1) % n_ranks])
    assert sent == [reduce_scatter_bytes(4 * size, n_ranks)] * n_ranks
    gathered, sent = ring_all_gather(inputs[0].tensor_split(n_ranks))
    assert all(torch.equal(g, inputs[0]) for g in gathered)
    assert sent == [all_gather_bytes(4 * size, n_ranks)] * n_ranks


def test_uneven_chunks_give_the_formula_on_average():
    n_ranks, size = 4, 4 * 5 + 3
    _, sent = ring_all_reduce(_ints(n_ranks, size))
    assert len(set(sent)) > 1
    assert sum(sent) / n_ranks == pytest.approx(all_reduce_bytes(4 * size, n_ranks))


def _tiny_grads(model, tokens):
    model.zero_grad()
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_ddp_all_reduce_of_real_gradients():
    torch.manual_seed(0)
    args, n_ranks = preset("tiny"), 4
    model = Transformer(args)
    tokens = torch.randint(0, args.vocab_size, (8, 9))
    full = _tiny_grads(model, tokens)
    local = [_tiny_grads(model, part) for part in tokens.chunk(n_ranks)]
    out, sent = ring_all_reduce(local)
    for o in out:  # the mean of equal shares' mean losses is the global batch's mean loss
        torch.testing.assert_close(o / n_ranks, full, rtol=1e-5, atol=1e-7)
    assert sent == [ddp_step_bytes(count_parameters(args), n_ranks)] * n_ranks


@pytest.mark.parametrize("reshard", [True, False])
def test_fsdp_step_gathers_and_scatters_real_parameters(reshard):
    torch.manual_seed(0)
    args, n_ranks = preset("tiny"), 4
    model = Transformer(args)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    shards = flat.tensor_split(n_ranks)  # what each rank keeps between steps
    sent = [0] * n_ranks
    for _ in range(2 if reshard else 1):  # forward, and backward again if freed after it
        gathered, s = ring_all_gather(list(shards))
        assert all(torch.equal(g, flat) for g in gathered)
        sent = [a + b for a, b in zip(sent, s)]
    tokens = torch.randint(0, args.vocab_size, (8, 9))
    local = [_tiny_grads(model, part) for part in tokens.chunk(n_ranks)]
    reduced, s = ring_reduce_scatter(local)
    summed = torch.stack(local).sum(0).tensor_split(n_ranks)
    for r in range(n_ranks):
        torch.testing.assert_close(reduced[r], summed[(r + 1) % n_ranks])
    sent = [a + b for a, b in zip(sent, s)]
    n = count_parameters(args)
    assert sent == [fsdp_step_bytes(n, n_ranks, reshard_after_forward=reshard)] * n_ranks
    assert fsdp_step_bytes(n, n_ranks, micro_batches=3) == 3 * fsdp_step_bytes(n, n_ranks)
    assert fsdp_step_bytes(n, n_ranks) == 1.5 * ddp_step_bytes(n, n_ranks)


def _collectives(model, tokens, **kwargs):
    """The tensors Meta's layout communicates in a forward pass, found from the real model: a
    row-parallel Linear all-reduces its output; the embedding (cut along dim) and the output
    (cut along vocab) all-gather theirs; column-parallel ones send nothing."""
    found, hooks = [], []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            continue
        dim = shard_dim(name + ".weight")
        kind = ("all_gather" if name in ("tok_embeddings", "output") else
                "all_reduce" if dim == 1 else None)
        if kind:
            hooks.append(module.register_forward_hook(
                lambda m, i, out, kind=kind: found.append((kind, out.detach()))))
    model(tokens, **kwargs)
    for h in hooks:
        h.remove()
    return found


@pytest.mark.parametrize("n_ranks", [2, 4])
@pytest.mark.parametrize("last_only", [False, True])
def test_tensor_parallel_bytes_from_the_real_models_activations(n_ranks, last_only):
    torch.manual_seed(0)
    args = preset("tiny")
    batch, seq = 3, 8
    tokens = torch.randint(0, args.vocab_size, (batch, seq))
    sent = 0
    for kind, out in _collectives(Transformer(args), tokens, last_only=last_only):
        flat = out.flatten()
        if kind == "all_reduce":
            sent += ring_all_reduce([flat] * n_ranks)[1][0]
        else:
            sent += ring_all_gather(list(flat.tensor_split(n_ranks)))[1][0]
    rows = batch if last_only else None
    assert sent == tp_forward_bytes(args.dim, args.n_layers, args.vocab_size, batch * seq, n_ranks,
                                    logit_rows=rows)


def test_adamw_bytes_against_a_real_optimizer_state():
    torch.manual_seed(0)
    args = preset("tiny")
    model = Transformer(args)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _tiny_grads(model, torch.randint(0, args.vocab_size, (2, 9)))
    opt.step()
    tensors = [t for p in model.parameters() for t in (p, p.grad, opt.state[p]["exp_avg"],
                                                       opt.state[p]["exp_avg_sq"])]
    real = sum(_nbytes(t) for t in tensors)
    n = count_parameters(args)
    assert real == adamw_bytes_per_rank(n) == adamw_bytes_per_rank(n, 4, sharded=False)
    assert adamw_bytes_per_rank(n, 4) == real / 4
    # Mixed precision: bf16 weights and grads, a float32 master copy with its AdamW moments.
    master = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for m in master:
        m.grad = torch.ones_like(m)
    mixed_opt = torch.optim.AdamW(master)
    mixed_opt.step()
    mixed = sum(2 * 2 * p.numel() for p in model.parameters())  # bf16 weight + bf16 grad
    mixed += sum(_nbytes(m) + sum(_nbytes(t) for t in mixed_opt.state[m].values() if t.dim()) for m in master)
    assert mixed == adamw_bytes_per_rank(n, mixed_precision=True)
    assert sum(ADAMW_MIXED.values()) == sum(ADAMW_FLOAT32.values()) == 16


def test_bad_input_says_what_is_wrong():
    with pytest.raises(ValueError, match="world"):
        all_reduce_bytes(8, 0)
    with pytest.raises(ValueError, match="micro_batches"):
        fsdp_step_bytes(8, 2, micro_batches=0)
    with pytest.raises(ValueError, match="tp=3"):
        step_report("7B", CLUSTERS["a100-hdr"], 64, tp=3)
    with pytest.raises(ValueError, match="34B"):
        step_report("34B", CLUSTERS["a100-hdr"], 64)


def test_hardware_bandwidths_are_one_direction():
    assert 2 * A100_80GB.nvlink_bytes_per_s == 600e9 and 2 * H100_SXM.nvlink_bytes_per_s == 900e9
    assert CLUSTERS["a100-hdr"].network_bytes_per_s * 8 == 200e9  # 200 Gb/s = 25 GB/s
    assert CLUSTERS["h100-ndr"].network_bytes_per_s * 8 == 400e9


def test_paper_mfu_and_step_times_follow_the_closed_forms():
    cluster, gpus = CLUSTERS["a100-hdr"], 512
    r7 = step_report("7B", cluster, gpus)
    n = count_parameters(preset("7B"))
    assert r7["n_params"] == n
    # Table 2: 184,320 A100 GPU-hours for 7B on 2T tokens
    assert r7["paper_mfu"] == pytest.approx(6 * n * 2e12 / (184_320 * 3600 * 312e12))
    assert 0.3 < r7["paper_mfu"] < 0.6
    assert r7["compute_s"] == pytest.approx(6 * n * 4 * 2**20 / (gpus * 312e12 * 0.4))
    assert r7["dp_s"] == pytest.approx(3 * (gpus - 1) / gpus * 2 * n / 25e9)  # 2 gathers + 1 scatter
    assert r7["tp_s"] == 0 and r7["fits"]
    assert r7["gpu_hours"] == pytest.approx(184_320, rel=0.05)  # MFU 0.4 against the paper's 0.39
    r70 = step_report("70B", cluster, 2048, tp=8)
    n70, groups = count_parameters(preset("70B")), 2048 // 8
    tokens = 4 * 2**20 // groups
    activation = tokens * 8192 * 2  # (tokens, dim) in bf16
    forward = 7 / 8 * activation + 80 * 2 * 2 * 7 / 8 * activation + 7 / 8 * tokens * 32000 * 2
    assert r70["tp_s"] == pytest.approx(2 * forward / 300e9)
    assert r70["state_bytes_per_gpu"] == pytest.approx(16 * (n70 // 8) / groups)
    assert not step_report("70B", cluster, 2048, tp=8, sharded=False)["fits"]  # 2 N bytes x 8
    days = training_days(n, 2e12, 1000, A100_80GB)
    assert days == pytest.approx(compute_seconds(n, 2e12, 1000, A100_80GB) / 86400)
    assert training_days(n, 2e12, gpus_for_days(n, 2e12, days, A100_80GB), A100_80GB) <= days


def test_which_parallelism_each_size_needs():
    gib80 = 80 * 2**30
    plan7 = memory_plan(count_parameters(preset("7B")), A100_80GB)
    assert plan7["train_bytes"] > gib80 and plan7["min_shards"] == 2  # 108 GB of AdamW state
    assert plan7["serve_min_gpus"] == 1
    plan70 = memory_plan(count_parameters(preset("70B")), A100_80GB)
    assert plan70["min_shards"] == math.ceil(16 * count_parameters(preset("70B")) / gib80) == 13
    assert plan70["serve_min_gpus"] == 2 and "tensor parallel" in plan70["serve"]
