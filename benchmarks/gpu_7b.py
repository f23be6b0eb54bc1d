"""GPU check at LLaMA 2 7B's shape: both checkpoint formats, logits against transformers, decoding speed.

    PYTHONPATH=. python3 benchmarks/gpu_7b.py --out gpu_results            # on one CUDA GPU, ~5 min
    PYTHONPATH=. python3 benchmarks/gpu_7b.py --out /tmp/r --preset tiny --device cpu \
        --dtype float32 --compile-backend eager --tokens 8 --runs 2       # the same code, scaled down

Stages; each writes OUT/NN_name.json as soon as it finishes, so a run cut short keeps
what it measured:

1. env       versions, device, memory.
2. build     a 7B-shaped model (`--preset`) with random weights (std 0.02, norms 1), built
             directly on the device in `--dtype` (no real weights needed: only shapes and
             formats matter here).
3. meta      saved in Meta's format as 2 model-parallel shards, loaded back with our loader
             onto the device: every tensor must be bit-identical.
4. hf        the same with Hugging Face's format (safetensors, 5 GB shards + index).
5. logits    transformers' `LlamaForCausalLM.from_pretrained` on the HF directory against our
             model loaded from it, on 2 x 128 random tokens, both in `--dtype`. Tolerance,
             stated: max |ours - transformers| <= 0.05 (the logits are about N(0, 1.3)), and
             our error against a float32 copy of the same weights at most 2x transformers'.
6. bandwidth a device-to-device copy of 1 GiB (median of 10): bandwidth counted as
             read + write bytes (2 x 1 GiB per copy). The decoding bound is that bandwidth
             over the weight bytes read per token (every weight read once, read only).
7. decode    batch-1 greedy decoding of `--tokens` new tokens after a 16-token prompt:
             ours eager, ours `torch.compile`d, and transformers' `generate()`;
             tokens/s = new tokens / wall time (prefill included), median of `--runs`.

The checkpoints go to a scratch folder under `--workdir` (deleted at the end unless --keep).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llama_from_scratch.checkpoints import hf_reader, hf_reference, hf_writer, meta_format
from llama_from_scratch.checkpoints.dtypes import DTYPES, parse_dtype
from llama_from_scratch.inference.device import compile_model
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.inference.memory import memory_account
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.transformer import Transformer

LOGIT_ATOL = 0.05


class Stages:
    """Writes each stage's result to OUT/NN_name.json when it finishes, and prints it."""

    def __init__(self, out: Path):
        self.out = out
        self.n = 0
        out.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, result: dict) -> dict:
        self.n += 1
        (self.out / f"{self.n:02d}_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"[{name}] {json.dumps(result)}", flush=True)
        return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device):
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return result, time.perf_counter() - start


def random_model(args, device: torch.device, dtype: torch.dtype) -> Transformer:
    """Random weights straight on the device in `dtype` (never a float32 copy of 7B), drawn by the
    model's own `init_weights` (std 0.02, residual projections scaled, norms 1). RoPE's tables stay
    float32 regardless."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    try:
        with torch.device(device):
            model = Transformer(args).eval()
    finally:
        torch.set_default_dtype(previous)
    return model


def folder(path: Path) -> dict:
    files = sorted(path.iterdir())
    return {"files": [p.name for p in files], "bytes": sum(p.stat().st_size for p in files)}


def same_weights(a: Transformer, b: Transformer) -> list[str]:
    """Keys whose tensors differ in dtype, shape or any bit."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k not in sb or sa[k].dtype != sb[k].dtype or not torch.equal(sa[k], sb[k])]


def copy_bandwidth(device: torch.device, nbytes: int, runs: int = 10) -> float:
    """Read + write bytes per second of a device-to-device copy (median of `runs`)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up
    times = [timed(lambda: dst.copy_(src), device)[1] for _ in range(runs)]
    return 2 * nbytes / statistics.median(times)


def decode_speed(fn, device: torch.device, runs: int, tokens: int) -> dict:
    fn()  # warm-up (and compilation, for a compiled model)
    times = [timed(fn, device)[1] for _ in range(runs)]
    return {"tokens_per_s": tokens / statistics.median(times), "median_s": statistics.median(times),
            "runs_s": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the per-stage JSON results")
    parser.add_argument("--preset", default="7B", help="model shape (default 7B; tiny for a CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=list(DTYPES))
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per decoding run (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed decoding runs, median taken (default 5)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    parser.add_argument("--copy-gib", type=float, default=1.0, help="GiB copied for the bandwidth (default 1)")
    parser.add_argument("--workdir", default=".", help="where the scratch checkpoint folder goes")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    opts = parser.parse_args(argv)

    import transformers

    device, dtype = torch.device(opts.device), parse_dtype(opts.dtype)
    args = preset(opts.preset)
    stages = Stages(Path(opts.out))
    work = Path(tempfile.mkdtemp(prefix="gpu_7b_", dir=opts.workdir))
    account = memory_account(args, dtype, tokens=16 + opts.tokens)
    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
           "device": str(device), "dtype": opts.dtype, "preset": opts.preset, "n_params": account.n_params,
           "weight_bytes": account.weight_bytes}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    stages.write("env", env)
    try:
        built, seconds = timed(lambda: random_model(args, device, dtype), device)
        stages.write("build", {"seconds": seconds})

        # Meta's format, 2 shards
        _, save_s = timed(lambda: meta_format.save_meta(built, work / "meta", n_shards=2), device)
        loaded, load_s = timed(lambda: meta_format.load_meta(work / "meta", device, dtype), device)
        differ = same_weights(built, loaded)
        stages.write("meta", {"save_s": save_s, "load_s": load_s, **folder(work / "meta"),
                              "bit_identical": not differ, "differing_keys": differ[:10]})
        del loaded

        # Hugging Face's format, sharded safetensors
        _, save_s = timed(lambda: hf_writer.save_hf(built, work / "hf", max_shard_bytes=5 * 10**9), device)
        ours, load_s = timed(lambda: hf_reader.load_hf(work / "hf", device, dtype), device)
        differ = same_weights(built, ours)
        stages.write("hf", {"save_s": save_s, "load_s": load_s, **folder(work / "hf"),
                            "bit_identical": not differ, "differing_keys": differ[:10]})
        del built
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # Logits against transformers, and both against a float32 copy
        theirs_model, load_s = timed(lambda: hf_reference.transformers_model(
            work / "hf", dtype=dtype, device=device, attn_implementation="sdpa"), device)
        torch.manual_seed(1)
        tokens = torch.randint(0, args.vocab_size, (2, 128), device=device)  # (batch, seq)
        reference = hf_reader.load_hf(work / "hf", device, torch.float32)  # the same weights, float32
        with torch.inference_mode():  # loaded parameters require grad: no autograd graph for a 7B forward
            a = ours(tokens)  # (2, 128, vocab) float32
            b = theirs_model(tokens).logits.float()  # (2, 128, vocab)
            c = reference(tokens)  # (2, 128, vocab)
        del reference
        diff = (a - b).abs().max().item()
        ours_err, theirs_err = (a - c).abs().max().item(), (b - c).abs().max().item()
        ok = diff <= LOGIT_ATOL and ours_err <= 2 * theirs_err + 1e-6
        stages.write("logits", {"transformers_load_s": load_s, "max_abs_diff": diff, "atol": LOGIT_ATOL,
                                "logit_abs_max": a.abs().max().item(), "logit_std": a.std().item(),
                                "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
                                "ours_vs_float32": ours_err, "transformers_vs_float32": theirs_err, "pass": ok})
        del a, b, c
        if device.type == "cuda":
            torch.cuda.empty_cache()

        # Memory bandwidth and the decoding bound
        bandwidth = copy_bandwidth(device, int(opts.copy_gib * 2**30))
        bound = bandwidth / account.weight_bytes
        stages.write("bandwidth", {"copy_bytes": int(opts.copy_gib * 2**30), "read_plus_write_bytes_per_s": bandwidth,
                                   "weight_bytes_per_token": account.weight_bytes, "bound_tokens_per_s": bound})

        # Decoding, batch 1, greedy
        prompt = torch.randint(3, args.vocab_size, (16,)).tolist()
        n = opts.tokens
        results = {"new_tokens": n, "prompt_tokens": len(prompt), "runs": opts.runs, "bound_tokens_per_s": bound}
        eager = decode_speed(lambda: generate(ours, [prompt], n, temperature=0.0, seed=None), device, opts.runs, n)
        results["ours_eager"] = eager
        ids = torch.tensor([prompt], device=device)

        def hf_generate():
            return theirs_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                         do_sample=False, pad_token_id=0)

        results["transformers_generate"] = decode_speed(hf_generate, device, opts.runs, n)
        eager_tokens = generate(ours, [prompt], n, temperature=0.0, seed=None)[0]
        compiled = compile_model(ours, backend=opts.compile_backend)  # in place: `ours` is compiled from here
        start = time.perf_counter()
        first = generate(compiled, [prompt], n, temperature=0.0, seed=None)[0]
        results["compile_first_run_s"] = time.perf_counter() - start
        results["ours_compiled"] = decode_speed(lambda: generate(compiled, [prompt], n, temperature=0.0, seed=None),
                                                device, opts.runs, n)
        results["compiled_same_tokens_as_eager"] = first == eager_tokens
        for key in ("ours_eager", "ours_compiled", "transformers_generate"):
            results[key]["fraction_of_bound"] = results[key]["tokens_per_s"] / bound
        if device.type == "cuda":
            results["max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(device)
        stages.write("decode", results)
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
