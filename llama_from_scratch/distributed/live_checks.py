"""Measurements on a real process group, run under torchrun; rank 0 writes the results as JSON.

    torchrun --standalone --nproc-per-node N -m llama_from_scratch.distributed.live_checks WHAT ARGS

    collectives OUT.json        bytes each rank sends in all-reduce, all-gather, reduce-scatter
                                and broadcast of a 4 MB float32 tensor (the kernel's count)
    grads OUT.json              one step of DDP and of FSDP on a global batch of 8 sequences,
                                each rank taking its 8/N: the gradients' largest difference from
                                one process on the whole batch, before and after clipping (and
                                the global norm), the bytes sent, memory per rank
    tp CHECKPOINT OUT.json      a Meta checkpoint served tensor parallel: logits' largest
                                difference from the whole model, greedy ids of both, sampled ids
                                seen by every rank (each rank seeded differently: rank 0's win),
                                weight bytes per rank, bytes sent in one forward pass

Chapter 13 runs them live and tests/test_distributed.py checks their results; the tiny model
(dim 64, 8 heads, 4 KV heads, 2 layers, vocabulary 512) keeps each run to seconds on CPUs.

Chapter: scale_out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from llama_from_scratch.checkpoints.meta_format import load_meta
from llama_from_scratch.distributed.comm_bytes import count_sent
from llama_from_scratch.distributed.data_parallel import DataParallel
from llama_from_scratch.distributed.fully_sharded import FullyShardedParallel, shard_bytes
from llama_from_scratch.distributed.process_group import World, close_world, init_world
from llama_from_scratch.distributed.tensor_parallel_load import load_tensor_parallel, local_weight_bytes
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.loss import cross_entropy
from llama_from_scratch.training.optimizer import AdamW, param_groups

torch.set_num_threads(1)
CLIP = 0.1  # below the tiny model's first gradient norm, so clipping changes the gradients


def fresh_model() -> Transformer:
    model = Transformer(preset("tiny", dim=64, n_heads=8, n_kv_heads=4, vocab_size=512, max_seq_len=64))
    model.init_weights(torch.Generator().manual_seed(0))
    return model


def full_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        g = p.grad
        out[name] = g.full_tensor() if hasattr(g, "full_tensor") else g
    return out


def write(world: World, out_path: str, result: dict) -> None:
    if world.is_writer:
        Path(out_path).write_text(json.dumps(result, indent=1) + "\n")


def collectives(world: World, out_path: str) -> None:
    n, size = world.size, 1_000_000  # float32 elements: 4 MB
    ops = {"all_reduce": lambda: dist.all_reduce(torch.ones(size)),
           "all_gather": lambda: dist.all_gather([torch.empty(size // n) for _ in range(n)], torch.ones(size // n)),
           "reduce_scatter": lambda: dist.reduce_scatter_tensor(torch.empty(size // n), torch.ones(size)),
           "broadcast": lambda: dist.broadcast(torch.ones(size), src=0)}
    result: dict = {"world": n, "tensor_bytes": 4 * size}
    for name, op in ops.items():
        dist.barrier()
        with count_sent() as sent:
            op()
        counts = [None] * n
        dist.all_gather_object(counts, sent.bytes)
        result[name] = counts  # per rank: a broadcast's root sends, the others mostly listen
    write(world, out_path, result)


def grads(world: World, out_path: str) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 512, (8, 32), generator=g), torch.randint(0, 512, (8, 32), generator=g)  # global batch
    reference = fresh_model()
    reference_loss = cross_entropy(reference(x), y)
    reference_loss.backward()  # one process on the whole batch
    ref = {n: p.grad.clone() for n, p in reference.named_parameters()}
    ref_norm = clip_grad_norm(reference.parameters(), CLIP).item()  # LLaMA 2 clips at 1.0; here it bites
    ref_clipped = {n: p.grad for n, p in reference.named_parameters()}
    n_params = sum(p.numel() for p in reference.parameters())
    result: dict = {"world": world.size, "n_params": n_params}
    for parallel in (DataParallel(world), FullyShardedParallel(world)):
        model = parallel.wrap(fresh_model())
        optimizer = AdamW(param_groups(parallel.unwrap(model), 0.1), lr=1e-3)
        xs, ys = parallel.share(x, y)
        dist.barrier()
        with count_sent() as sent:
            loss = cross_entropy(model(xs), ys)
            loss.backward()
        got = full_grads(parallel.unwrap(model))
        diff = max((got[n] - ref[n]).abs().max().item() for n in ref)
        scale = max(ref[n].abs().max().item() for n in ref)
        norm = parallel.as_float(clip_grad_norm(model.parameters(), CLIP))  # global norm over the shards
        clipped = full_grads(parallel.unwrap(model))
        clipped_diff = max((clipped[n] - ref_clipped[n]).abs().max().item() for n in ref)
        optimizer.step()
        held = shard_bytes(model, optimizer)
        result[parallel.name] = {"max_grad_diff": diff, "max_grad": scale, "sent": sent.bytes,
                                 "bytes_per_rank": held, "mean_loss": parallel.mean(loss.detach()).item(),
                                 "grad_norm": norm, "reference_grad_norm": ref_norm, "max_clipped_diff": clipped_diff}
    result["reference_loss"] = reference_loss.item()
    write(world, out_path, result)


def tp(world: World, checkpoint: str, out_path: str) -> None:
    model = load_tensor_parallel(checkpoint, world.rank, world.size, dtype=torch.float32, max_seq_len=64)
    reference = load_meta(checkpoint, dtype=torch.float32, max_seq_len=64)  # the whole model, to compare
    tokens = torch.randint(0, reference.args.vocab_size, (4, 48), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        dist.barrier()
        with count_sent() as sent:
            logits = model(tokens)  # (4, 48, vocab) on every rank
        expected = reference(tokens)
    prompts = [[1, 5, 7], [1, 9]]
    ids = generate(model, prompts, 10, temperature=0)
    sampled = generate(model, prompts, 10, temperature=1.0, top_p=1.0, seed=world.rank)  # seeds differ per rank
    gathered = [None] * world.size
    dist.all_gather_object(gathered, sampled)
    held = local_weight_bytes(model)
    total = sum(p.nbytes for n, p in reference.named_parameters() if not n.endswith("norm.weight"))
    result = {"world": world.size, "max_logit_diff": (logits - expected).abs().max().item(),
              "greedy": ids, "greedy_reference": generate(reference, prompts, 10, temperature=0),
              "sampled_per_rank": gathered, "sliced_bytes": held["sliced"], "total_sliced_bytes": total,
              "sent": sent.bytes, "tokens": tokens.numel()}
    write(world, out_path, result)


CHECKS = {"collectives": collectives, "grads": grads, "tp": tp}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in CHECKS:
        print(f"usage: torchrun ... -m llama_from_scratch.distributed.live_checks {{{','.join(CHECKS)}}} ARGS OUT.json",
              file=sys.stderr)
        sys.exit(2)
    joined = init_world(torch.device("cpu"))
    try:
        CHECKS[sys.argv[1]](joined, *sys.argv[2:])
    finally:
        close_world()  # after the check returned: its models go before the group (see close_world)
