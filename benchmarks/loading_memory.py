"""Peak memory of loading a checkpoint: ours (meta device, memory-mapped, assigned) against the naive way.

    python benchmarks/loading_memory.py [--gb 2] [--runs 3] [--dir /tmp]

Writes a synthetic LLaMA-shaped bfloat16 checkpoint of about `--gb` GB (S bytes) three
ways: Meta's format in one file, Meta's format in 2 model-parallel shards, Hugging Face's
single model.safetensors. Then each case runs in a fresh process (`memory_probe`), which
imports everything, takes its RSS as the baseline, loads, reads every weight once, and
reports the peak RSS above the baseline (memory-mapped pages count once read). Cases:

1. Meta, 1 file, loaded in its own dtype (ours)          target: peak < 1.3 x S
2. Hugging Face safetensors, own dtype (ours)            target: peak < 1.3 x S
3. naive: Transformer(args) in float32, then load_state_dict(torch.load(file))
4. Meta, 2 shards (ours): merging allocates the merged tensors, one shard mapped at a time
5. Meta, 1 file, converted to float32 (ours): the target needs 2 x S of its own
6. Hugging Face, converted to float32 (ours)

Each is reported against max(S, target bytes): the least any load can hold. "file-backed"
is the part of the resident memory (after loading) that is the mapped file's pages: the
kernel may drop and re-read those under memory pressure, unlike anonymous memory. Memory is
not timing: `--runs` repeats give the median and the spread. The files are deleted at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from llama_from_scratch.checkpoints import hf_writer, meta_format
from llama_from_scratch.checkpoints.assign import expected_shapes, load_state_dict_into
from llama_from_scratch.checkpoints.memory_probe import measure
from llama_from_scratch.model.config import ModelArgs

TARGET = 1.3


def synthetic_args(gb: float) -> ModelArgs:
    """A LLaMA-shaped model (dim 2048, vocab 32,000) with as many layers as make `gb` GB in bfloat16."""
    base = ModelArgs(dim=2048, n_layers=1, n_heads=16, vocab_size=32000, multiple_of=256, max_seq_len=4096)
    shapes = expected_shapes(base)
    per_layer = sum(torch.Size(s).numel() for k, s in shapes.items() if k.startswith("layers.0."))
    rest = sum(torch.Size(s).numel() for k, s in shapes.items() if not k.startswith("layers."))
    layers = max(1, round((gb * 1e9 / 2 - rest) / per_layer))
    return ModelArgs(dim=2048, n_layers=layers, n_heads=16, vocab_size=32000, multiple_of=256, max_seq_len=4096)


def write_checkpoints(args: ModelArgs, root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    state = {}
    for key, shape in expected_shapes(args).items():
        scale = 1.0 if key.endswith("norm.weight") else 0.02
        state[key] = (torch.randn(shape) * scale).to(torch.bfloat16)
    model = load_state_dict_into(args, state, "synthetic")
    del state
    paths = {"meta1": root / "meta-1", "meta2": root / "meta-2", "hf": root / "hf"}
    meta_format.save_meta(model, paths["meta1"])
    meta_format.save_meta(model, paths["meta2"], n_shards=2)
    hf_writer.save_hf(model, paths["hf"])
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0, help="checkpoint size in GB (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per case (default 3)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to write the checkpoints")
    opts = parser.parse_args()

    args = synthetic_args(opts.gb)
    root = Path(tempfile.mkdtemp(prefix="llama_memory_", dir=opts.dir))
    try:
        print(f"writing a {args.n_layers}-layer, dim-{args.dim} bfloat16 checkpoint three ways in {root} ...",
              file=sys.stderr)
        paths = write_checkpoints(args, root)
        cases = [
            ("Meta, 1 file, bfloat16 (ours)", "ours", paths["meta1"], None, True),
            ("HF safetensors, bfloat16 (ours)", "ours", paths["hf"], None, True),
            ("naive: float32 model + torch.load", "naive", paths["meta1"], None, False),
            ("Meta, 2 shards, bfloat16 (ours)", "ours", paths["meta2"], None, False),
            ("Meta, 1 file -> float32 (ours)", "ours", paths["meta1"], "float32", False),
            ("HF safetensors -> float32 (ours)", "ours", paths["hf"], "float32", False),
        ]
        print(f"{'case':36} {'S (GB)':>7} {'target (GB)':>11} {'peak (GB)':>10} {'peak/S':>7} "
              f"{'peak/max(S,target)':>18} {'file-backed':>11} {'load s':>7}  check")
        failed = False
        for name, method, path, dtype, gated in cases:
            results = [measure(method, path, dtype) for _ in range(opts.runs)]
            peaks = [r["peak_bytes"] for r in results]
            peak = statistics.median(peaks)
            size = results[0]["file_bytes"]
            target = results[0]["model_bytes"]
            ratio, against = peak / size, peak / max(size, target)
            spread = f"[{min(peaks) / size:.3f}-{max(peaks) / size:.3f}]"
            check = ""
            if gated:
                ok = ratio < TARGET
                failed |= not ok
                check = f"{'PASS' if ok else 'FAIL'} (< {TARGET} x S)"
            file_backed = statistics.median(r["file_backed_bytes"] for r in results) / 1e9
            print(f"{name:36} {size / 1e9:7.3f} {target / 1e9:11.3f} {peak / 1e9:10.3f} {ratio:7.3f} "
                  f"{against:18.3f} {file_backed:8.3f} GB {statistics.median(r['seconds'] for r in results):7.2f}"
                  f"  {check} {spread}")
        print(f"median of {opts.runs} fresh processes per case; [min-max] of peak/S across them")
        return 1 if failed else 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
