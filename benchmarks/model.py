"""Benchmark: our Transformer against transformers' LlamaForCausalLM, same config, same weights.

    python benchmarks/model.py            # dim 512, 8 layers, 8 heads, 4 KV heads, seq 256, batch 8
    python benchmarks/model.py --quick    # a smaller run, seconds

Measured in one run, float32 on the CPU, medians of --runs runs (A and B interleaved):

1. training step (forward + cross-entropy + backward) tokens/s, ours / transformers;
2. greedy decoding of --new-tokens tokens with a KV cache, ours `generate` / `LlamaForCausalLM.generate`
   (the two must produce the same ids);
3. our decoding with the KV cache / without it (full recompute each step), by length;
4. our decoding tokens/s against this machine's memory-bandwidth bound: bytes of weights read
   per token over the bandwidth of a large `copy_`, counting read + write bytes (and, the
   stricter bound, counting only the bytes read).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_time  # noqa: E402

from llama_from_scratch.checkpoints.hf_reference import to_hf_model  # noqa: E402
from llama_from_scratch.inference.generation import generate  # noqa: E402
from llama_from_scratch.model.config import ModelArgs  # noqa: E402
from llama_from_scratch.model.transformer import Transformer  # noqa: E402


def interleaved(fns: dict, runs: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, running them in turn so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def copy_bandwidth(n_bytes: int = 512 * 2**20, runs: int = 7) -> float:
    """Bytes per second of `dst.copy_(src)`, counting the read and the write (2 x size)."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * n_bytes / median_time(lambda: dst.copy_(src), runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small config, for a fast check")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (at least 5)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 is steadier on a busy machine")
    args_cli = parser.parse_args()
    if args_cli.threads:
        torch.set_num_threads(args_cli.threads)
    if args_cli.quick:
        args = ModelArgs(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=32000, max_seq_len=512)
        batch, seq, new_tokens, lengths = 4, 128, 64, [16, 32, 64]
    else:
        args = ModelArgs(dim=512, n_layers=8, n_heads=8, n_kv_heads=4, vocab_size=32000, max_seq_len=512)
        batch, seq, new_tokens, lengths = 8, 256, 256, [16, 32, 64, 128]
    runs = max(args_cli.runs, 5)
    torch.manual_seed(0)
    ours = Transformer(args)
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.02) if p.dim() > 1 else torch.nn.init.uniform_(p, 0.5, 1.5)
    theirs = to_hf_model(ours, attn_implementation="sdpa")  # transformers' default attention
    n_params = sum(p.numel() for p in ours.parameters())
    print(f"config: dim {args.dim}, {args.n_layers} layers, {args.n_heads} heads, {args.kv_heads} KV heads, "
          f"hidden {args.ffn_hidden_dim}, vocab {args.vocab_size}, {n_params / 1e6:.1f}M parameters; "
          f"float32, CPU, {torch.get_num_threads()} threads; torch {torch.__version__}, "
          f"transformers {__import__('transformers').__version__}; medians of {runs} runs")

    # 1. training step --------------------------------------------------------------------------
    tokens = torch.randint(0, args.vocab_size, (batch, seq + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]  # (batch, seq) each

    def step(model, logits_of):
        model.zero_grad(set_to_none=True)
        logits = logits_of(x)  # (batch, seq, vocab)
        F.cross_entropy(logits.reshape(-1, args.vocab_size), y.reshape(-1)).backward()

    ours.train(), theirs.train()
    t = interleaved({"ours": lambda: step(ours, ours),
                     "transformers": lambda: step(theirs, lambda ids: theirs(ids, use_cache=False).logits)}, runs)
    ours.eval(), theirs.eval()
    tps = {k: batch * seq / v for k, v in t.items()}
    print(f"\n1. training step (batch {batch}, seq {seq}): ours {tps['ours']:,.0f} tokens/s, "
          f"transformers {tps['transformers']:,.0f} tokens/s, ratio {tps['ours'] / tps['transformers']:.3f}x "
          f"(target >= 0.95x)")

    # 2. greedy decoding with a KV cache ---------------------------------------------------------
    prompt = torch.randint(3, args.vocab_size, (1, 16))
    results = {}

    def ours_decode():
        results["ours"] = generate(ours, [prompt[0].tolist()], new_tokens, temperature=0.0)[0]

    def hf_decode():
        with torch.inference_mode():
            out = theirs.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)
        results["transformers"] = out[0, prompt.shape[1]:].tolist()

    t = interleaved({"ours": ours_decode, "transformers": hf_decode}, runs)
    same = results["ours"] == results["transformers"]
    tps = {k: new_tokens / v for k, v in t.items()}
    print(f"2. greedy decoding, {new_tokens} new tokens after a 16-token prompt, KV cache: "
          f"ours {tps['ours']:.1f} tokens/s, transformers generate() {tps['transformers']:.1f} tokens/s, "
          f"ratio {tps['ours'] / tps['transformers']:.3f}x (target >= 1.0x); same ids: {same}")
    decode_tps = tps["ours"]

    # 3. cached against uncached, by length ------------------------------------------------------
    print("3. our greedy decoding after a 16-token prompt, KV cache against full recompute:")
    for n in lengths:
        t = interleaved({
            "cached": lambda: generate(ours, [prompt[0].tolist()], n, temperature=0.0),
            "uncached": lambda: generate(ours, [prompt[0].tolist()], n, temperature=0.0, use_cache=False),
        }, runs)
        print(f"   {n:4d} new tokens: cached {n / t['cached']:7.1f} tokens/s, uncached "
              f"{n / t['uncached']:7.1f} tokens/s, speed-up {t['uncached'] / t['cached']:.2f}x")

    # 4. memory-bandwidth bound ------------------------------------------------------------------
    bw_rw = copy_bandwidth()
    # Per token every weight matrix is read once; the embedding only one row of it.
    weight_bytes = 4 * (n_params - ours.tok_embeddings.weight.numel() + args.dim)
    bound_rw, bound_r = bw_rw / weight_bytes, (bw_rw / 2) / weight_bytes
    print(f"4. memory bandwidth (copy_ of 512 MiB): {bw_rw / 1e9:.1f} GB/s counting read + write "
          f"({bw_rw / 2e9:.1f} GB/s counting only reads); weights read per token: {weight_bytes / 1e6:.1f} MB")
    print(f"   bound: {bound_rw:.1f} tokens/s (read + write counted) or {bound_r:.1f} tokens/s (reads only); "
          f"our decoding {decode_tps:.1f} tokens/s = {decode_tps / bound_rw:.2f} of the read+write bound, "
          f"{decode_tps / bound_r:.2f} of the read-only one")


if __name__ == "__main__":
    main()
