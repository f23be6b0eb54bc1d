"""The long run: chapter 8's LLaMA trained on tinyshakespeare for longer, with the `train` command.

    python -m experiments.pretraining_long_run                    # 17 minutes here, 1 thread
    python -m experiments.pretraining_long_run --steps 20 --dim 32 --seq-len 64 --work /tmp/x  # seconds

Runs `python -m llama_from_scratch train` (exactly what a reader would type; resumed with
--resume when WORK already holds a checkpoint, so a killed script continues where it was), then
reads WORK/metrics.jsonl for the loss curves, evaluates nothing itself (the command's final JSON
line is the loss on the whole validation split), and samples 200 tokens from the trained model,
greedy and at temperature 0.8. Writes experiments/results/pretraining_long_run.json (schema:
experiments/README.md). Checkpoints and token files stay in WORK, outside the repository.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from experiments.common import ROOT, command_line, machine, now, rounded, thin_curve, write_json

PROMPT = "ROMEO:\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "experiments/results/pretraining_long_run.json"))
    p.add_argument("--work", default="/tmp/llama_long_run", help="the training directory (checkpoints)")
    p.add_argument("--data", default=None, help="a text file (default: tinyshakespeare)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--warmup-steps", type=int, default=25)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-batches", type=int, default=10)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sample-tokens", type=int, default=200)
    p.add_argument("--curve-every", type=int, default=10, help="thin the train-loss curve to every N steps")
    return p.parse_args(argv)


def train_command(a: argparse.Namespace, data: str, resume: bool) -> list[str]:
    flags = {"--data": data, "--out": a.work, "--vocab-size": a.vocab_size, "--dim": a.dim,
             "--n-layers": a.n_layers, "--n-heads": a.n_heads, "--n-kv-heads": a.n_kv_heads,
             "--seq-len": a.seq_len, "--batch-size": a.batch_size, "--max-steps": a.steps,
             "--lr": a.lr, "--warmup-steps": a.warmup_steps, "--eval-every": a.eval_every,
             "--eval-batches": a.eval_batches, "--save-every": a.save_every, "--seed": a.seed}
    argv = [sys.executable, "-m", "llama_from_scratch", "train"]
    for flag, value in flags.items():
        argv += [flag, str(value)]
    return argv + (["--resume"] if resume else [])


def samples(work: Path, n_tokens: int) -> dict[str, str]:
    """200 tokens after PROMPT, greedy and at temperature 0.8 (top_p 1: plain temperature)."""
    from llama_from_scratch.inference.generation import generate
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.training.run import load_trained_model, tokenizer_file

    model = load_trained_model(work)
    tokenizer = load_tokenizer(tokenizer_file(work))
    prompt = tokenizer.encode(PROMPT, bos=True)
    out = {}
    for name, temperature in (("greedy", 0.0), ("temperature_0.8", 0.8)):
        ids = generate(model, [prompt], n_tokens, temperature=temperature, top_p=1.0, seed=0)[0]
        out[name] = PROMPT + tokenizer.decode(ids)
    return out


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    from llama_from_scratch import datafiles

    data = a.data or str(datafiles.path("tinyshakespeare.txt"))
    work = Path(a.work)
    resume = (work / "checkpoint.pt").exists()
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    start = time.perf_counter()
    done = subprocess.run(train_command(a, data, resume), env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if done.returncode != 0:
        print(f"the train command failed (exit {done.returncode}); see its message above", file=sys.stderr)
        return done.returncode
    wall = time.perf_counter() - start
    final = json.loads(done.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
    run = json.loads((work / "run.json").read_text())
    tokens_per_step = a.batch_size * a.seq_len
    train_seconds = sum(tokens_per_step / r["tokens_per_s"] for r in records)

    import torch

    torch.set_num_threads(a.threads)
    from llama_from_scratch.training.ablation_params import parameter_counts
    from llama_from_scratch.model.config import ModelArgs

    counts = parameter_counts(ModelArgs(**run["model"]))
    result = {
        "command": command_line("experiments.pretraining_long_run"),
        "train_command": " ".join(["python", *train_command(a, data, False)[1:]]).replace(str(ROOT) + "/", ""),
        "created": now(),
        "machine": {**machine(), "threads": a.threads},
        "config": {"model": run["model"], "train": run["train"], "data": Path(data).name,
                   "tokenizer": f"BPE of {a.vocab_size} pieces (sentencepiece_trainer, on the training split)",
                   "val_bytes_per_token": rounded(final["val_loss"] / math.log(2) / final["bits_per_byte"])},
        "runs": [{"variant": "llama", "seed": a.seed, "lr": a.lr, "params_non_embedding": counts["non_embedding"],
                  "params_total": counts["total"], "tokens": final["step"] * tokens_per_step,
                  "steps": final["step"], "val_loss": rounded(final["val_loss"]),
                  "val_bits_per_byte": rounded(final["bits_per_byte"]),
                  "train_loss_last": rounded(records[-1]["train_loss"], 4),
                  "seconds": round(train_seconds, 1), "wall_seconds_last_invocation": round(wall, 1),
                  "tokens_per_s": round(final["step"] * tokens_per_step / train_seconds, 1),
                  "curve": thin_curve(records, a.curve_every)}],
        "samples": {"prompt": PROMPT, "max_new_tokens": a.sample_tokens, "top_p": 1.0, "seed": 0,
                    **samples(work, a.sample_tokens)},
    }
    write_json(Path(a.out), result)
    print(json.dumps({k: result["runs"][0][k] for k in ("steps", "val_loss", "val_bits_per_byte", "seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
