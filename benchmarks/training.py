"""Benchmark: training tokens/s and MFU, our model in our loop against transformers' LlamaForCausalLM.

    python benchmarks/training.py --threads 2      # sizes small and medium: ~6 min on 2 idle cores
    python benchmarks/training.py --sizes tiny --steps 1 --repeats 1 --compile-backend eager  # seconds

Both models are trained by the same code, `training.loop.train_step` (our cross-entropy, our
global-norm clipping, our AdamW with LLaMA 2's settings and weight decay on the matrices only),
on the same batches (two `BatchSampler`s with one seed over tinyshakespeare, tokenized with a
4,096-piece BPE that our trainer fits to its first 90% here) from the same initial weights
(`to_hf_model` copies ours; transformers' attention is "sdpa", its default). Only the model
differs. The first step's loss and gradient norm of the two are printed: they must agree.

Sizes (float32, CPU; vocab 4096, GQA with 8 query and 4 key/value heads, Meta's SwiGLU
hidden-size rule with multiple_of 256, untied output):

    tiny    dim 64,  2 layers, seq 32,  batch 4   (for the test)
    small   dim 256, 4 layers, seq 256, batch 8
    medium  dim 512, 8 layers, seq 256, batch 8

Timing: every variant (ours, transformers, and with --compile both `torch.compile`d) takes one
warm-up step (not in the medians), then --repeats rounds of --steps optimizer steps each, the
variants in turn (ours, theirs, ..., then the reverse order in the next round, so neither always
goes first) so that drift hits all alike; tokens/s is the median over the rounds. Three ratios ours /
theirs: of the medians (the headline), the median of each round's ratio (a round's two runs are
seconds apart: the robust one on a machine others share), and of the best runs. The compiled
variants' warm-up step is timed separately: beyond one compiled step, that is the compile cost
(with an empty inductor cache, in the run's temporary folder).
MFU = tokens/s x training FLOPs per token / this CPU's float32 matmul peak
(`training.flops.measure_matmul_peak`, the best of before and after the timings, same threads).
FLOPs per token: `training.flops.flops_per_token`, PaLM's "full" convention (every query against
all T keys, 6N + 12 L d T with N the matmul weights) and the "causal" one (half the attention).
Not measured here: GPUs (benchmarks/gpu_7b.py), bfloat16 autocast, gradient accumulation.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_time  # noqa: E402

from llama_from_scratch import datafiles  # noqa: E402
from llama_from_scratch.checkpoints.hf_reference import to_hf_model  # noqa: E402
from llama_from_scratch.model.config import ModelArgs  # noqa: E402
from llama_from_scratch.training.batches import BatchSampler  # noqa: E402
from llama_from_scratch.training.flops import flops_per_token, measure_matmul_peak, mfu  # noqa: E402
from llama_from_scratch.training.loop import train_step  # noqa: E402
from llama_from_scratch.training.optimizer import AdamW, param_groups  # noqa: E402
from llama_from_scratch.training.run import TrainSettings  # noqa: E402
from llama_from_scratch.training.setup import build_model  # noqa: E402

VOCAB = 4096
# name: (dim, n_layers, seq_len, batch)
SIZES = {"tiny": (64, 2, 32, 4), "small": (256, 4, 256, 8), "medium": (512, 8, 256, 8)}
SEED = 0


def model_args(name: str) -> ModelArgs:
    dim, n_layers, seq, _ = SIZES[name]
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=8, n_kv_heads=4, vocab_size=VOCAB, max_seq_len=seq)


def shakespeare_tokens(workdir: Path):
    """tinyshakespeare's training split, tokenized with a 4,096-piece BPE trained on it here."""
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.tokenizer.sentencepiece_model import write_model
    from llama_from_scratch.tokenizer.sentencepiece_trainer import train
    from llama_from_scratch.training.data import tokenize_file

    text_path = datafiles.path("tinyshakespeare.txt")
    text = text_path.read_text(encoding="utf-8")
    write_model(train(text[: len(text) * 9 // 10], VOCAB), workdir / "tokenizer.model")
    return tokenize_file(text_path, load_tokenizer(workdir / "tokenizer.model"), cache_dir=workdir).train


class Variant:
    """One model with its own optimizer and sampler (same seed: same batches), stepped by train_step."""

    def __init__(self, model: torch.nn.Module, tokens, settings: TrainSettings):
        self.model, self.settings, self.step = model.train(), settings, 0
        self.optimizer = AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                               betas=(settings.beta1, settings.beta2), eps=settings.eps)
        self.sampler = BatchSampler(tokens, settings.seq_len, settings.batch_size, SEED)
        self.first: dict | None = None

    def run(self, steps: int) -> None:
        for _ in range(steps):
            record = train_step(self.model, self.optimizer, self.sampler, self.settings, self.step)
            self.first = self.first or record
            self.step += 1


def measure_size(name: str, tokens, cli: argparse.Namespace, peak_before: float) -> dict:
    args = model_args(name)
    _, _, seq, batch = SIZES[name]
    print(f"measuring {name}...", file=sys.stderr, flush=True)
    settings = TrainSettings(seq_len=seq, batch_size=batch, max_steps=10_000, warmup_steps=10, lr=1e-3)
    ours = build_model(args, SEED, torch.device("cpu"))
    theirs = to_hf_model(ours, attn_implementation="sdpa")  # copies of the same initial weights
    theirs.config.use_cache = False  # training: no KV cache to build
    variants = {"ours": Variant(ours, tokens, settings), "transformers": Variant(theirs, tokens, settings)}
    failures: dict[str, str] = {}
    if cli.compile:
        for key, model in (("ours", ours), ("transformers", theirs)):
            twin = copy.deepcopy(model)  # before any step: the same weights again
            twin.compile(backend=cli.compile_backend)
            variants[f"{key}_compiled"] = Variant(twin, tokens, settings)
    warmup_s: dict[str, float] = {}
    for key in list(variants):
        try:
            warmup_s[key] = median_time(lambda: variants[key].run(1), 1)  # compiles, for the compiled ones
        except Exception as err:  # noqa: BLE001 - a failed compile is reported, not fatal
            if not key.endswith("_compiled"):
                raise
            failures[key] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
            print(f"  {name}: {key} failed on its first step, left out: {failures[key]}", file=sys.stderr)
            del variants[key]
    runs: dict[str, list[float]] = {key: [] for key in variants}
    for round_ in range(cli.repeats):
        for key in (list(variants) if round_ % 2 == 0 else reversed(list(variants))):
            runs[key].append(median_time(lambda: variants[key].run(cli.steps), 1))
    tokens_per_round = cli.steps * batch * seq
    flops = flops_per_token(args, seq)
    n_params = sum(p.numel() for p in ours.parameters())
    result = {"config": {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads,
                         "n_kv_heads": args.kv_heads, "hidden_dim": args.ffn_hidden_dim, "vocab_size": VOCAB,
                         "seq_len": seq, "batch_size": batch, "parameters": n_params},
              "flops_per_token": {"train_full": flops["train_full"], "train_causal": flops["train_causal"],
                                  "six_n": flops["six_n"]},
              "first_step": {k: variants[k].first for k in ("ours", "transformers")},
              "variants": {}, "failures": failures, "peak_before": peak_before}
    for key in variants:
        tps = [tokens_per_round / s for s in runs[key]]
        result["variants"][key] = {"tokens_per_s": statistics.median(tps), "runs_s": runs[key],
                                   "first_round_s": warmup_s[key]}
    return result


def finish(result: dict, peak: float, steps: int) -> None:
    """Ratios and MFU, once the peak measured after the timings is known too."""
    variants, flops = result["variants"], result["flops_per_token"]
    for v in variants.values():
        v["mfu_full"] = mfu(v["tokens_per_s"], flops["train_full"], peak)
        v["mfu_causal"] = mfu(v["tokens_per_s"], flops["train_causal"], peak)
    result["peak_flops"] = peak
    ours, theirs = variants["ours"], variants["transformers"]
    result["ratio"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
    result["ratio_paired"] = statistics.median(t / o for o, t in zip(ours["runs_s"], theirs["runs_s"]))
    result["ratio_best"] = min(theirs["runs_s"]) / min(ours["runs_s"])
    for key in ("ours", "transformers"):
        if f"{key}_compiled" in variants:
            compiled = variants[f"{key}_compiled"]
            compiled["speedup_over_eager"] = compiled["tokens_per_s"] / variants[key]["tokens_per_s"]
            # The warm-up round is one step: the compile cost is what it took beyond a compiled step.
            compiled["compile_s"] = compiled["first_round_s"] - statistics.median(compiled["runs_s"]) / steps


def report(name: str, r: dict) -> None:
    c, f = r["config"], r["flops_per_token"]
    print(f"\n{name}: dim {c['dim']}, {c['n_layers']} layers, {c['n_heads']} heads / {c['n_kv_heads']} KV heads, "
          f"hidden {c['hidden_dim']}, vocab {c['vocab_size']}, seq {c['seq_len']}, batch {c['batch_size']}; "
          f"{c['parameters'] / 1e6:.2f}M parameters; training FLOPs/token {f['train_full'] / 1e6:.1f}M (full "
          f"attention), {f['train_causal'] / 1e6:.1f}M (causal), 6N {f['six_n'] / 1e6:.1f}M")
    first = r["first_step"]
    print(f"  first step, same weights and batch: loss ours {first['ours']['train_loss']:.6f} / transformers "
          f"{first['transformers']['train_loss']:.6f}; grad norm {first['ours']['grad_norm']:.6f} / "
          f"{first['transformers']['grad_norm']:.6f}")
    print(f"  {'variant':22} {'tokens/s':>10} {'vs ours':>8} {'MFU full':>9} {'MFU causal':>11} {'first step':>12}")
    ours = r["variants"]["ours"]["tokens_per_s"]
    for key, v in r["variants"].items():
        print(f"  {key:22} {v['tokens_per_s']:10,.0f} {v['tokens_per_s'] / ours:7.3f}x {100 * v['mfu_full']:8.1f}% "
              f"{100 * v['mfu_causal']:10.1f}% {v['first_round_s']:11.2f}s")
    print(f"  ratio ours / transformers: {r['ratio']:.3f}x (target >= 1.0x); median of per-round ratios "
          f"{r['ratio_paired']:.3f}x, best runs {r['ratio_best']:.3f}x")
    for key, why in r["failures"].items():
        print(f"  {key}: failed, left out ({why})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per timed round")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per variant (the median is reported)")
    parser.add_argument("--sizes", default="small,medium", help=f"comma-separated, of {', '.join(SIZES)}")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time torch.compile'd copies of both models")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager: a dry run)")
    parser.add_argument("--out", type=Path, help="also write the results to this JSON file")
    cli = parser.parse_args(argv)
    sizes = [s.strip() for s in cli.sizes.split(",") if s.strip()]
    bad = [s for s in sizes if s not in SIZES]
    if bad or not sizes or cli.steps < 1 or cli.repeats < 1:
        parser.error(f"--sizes takes names from {', '.join(SIZES)} (got {cli.sizes!r}); --steps and --repeats >= 1")
    if cli.threads:
        torch.set_num_threads(cli.threads)
    print(f"float32, CPU ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads; "
          f"torch {torch.__version__}, transformers {__import__('transformers').__version__}; medians of "
          f"{cli.repeats} rounds of {cli.steps} steps, variants interleaved")
    saved_cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bench_training_") as workdir:
        # An empty inductor cache: the compile time measured is a first run's, not a cache hit.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(workdir) / "inductor")
        try:
            tokens = shakespeare_tokens(Path(workdir))
            peak_before = measure_matmul_peak(torch.float32)
            results = {name: measure_size(name, tokens, cli, peak_before) for name in sizes}
        finally:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR")
            if saved_cache is not None:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved_cache
    peak = max(peak_before, measure_matmul_peak(torch.float32))
    print(f"float32 matmul peak (1024 x 1024, best of before and after): {peak / 1e9:.1f} GFLOP/s")
    for name, r in results.items():
        finish(r, peak, cli.steps)
        report(name, r)
    if cli.out:
        env = {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
               "threads": torch.get_num_threads(), "steps": cli.steps, "repeats": cli.repeats,
               "compile_backend": cli.compile_backend if cli.compile else None, "peak_flops": peak}
        cli.out.parent.mkdir(parents=True, exist_ok=True)
        cli.out.write_text(json.dumps({"env": env, "sizes": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
