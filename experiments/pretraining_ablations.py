"""Ablations: what each of LLaMA's block choices buys, at equal parameters and equal tokens.

    python -m experiments.pretraining_ablations --lr-sweep 2e-3,4e-3,8e-3 --seeds 0,1,2,3,4  # committed
    python -m experiments.pretraining_ablations --steps 3 --dim 16 --seeds 0 --work /tmp/x --out /tmp/x.json

Variants (ablation_model.AblationModel): LLaMA's block (RMSNorm, RoPE, SwiGLU, no biases, GQA),
a GPT-2-style block (LayerNorm, learned absolute positions, GELU MLP, biases), each of those four
changes alone on LLaMA, and LLaMA with multi-head instead of grouped-query attention. Every
variant's MLP is resized (ablation_params.match_parameters) to LLaMA's non-embedding parameter
count; all train on the same tokens (same seeds, same batches, same steps) with the package's
loop pieces (train_step, evaluate, BatchSampler, AdamW with param_groups) and one schedule.

With --lr-sweep, LLaMA's block is first trained (seed 0) at each of those peak learning rates,
and the one with the lowest validation loss is used for every variant. Results go to --out
after each run; runs already there are skipped, so a killed script continues where it was.
Several processes may work on one --out at once: each claims a run with a lock file in --work.
Reports per variant the mean +- std over seeds of the validation bits per byte (the whole
validation split), and for each comparison whether the difference exceeds the seed noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from experiments.ablation_results import locked, open_results, record, run_key
from experiments.common import ROOT, read_json, rounded, thin_curve
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.training.ablation_model import AblationArgs, AblationModel, ablation_args
from llama_from_scratch.training.ablation_params import match_parameters, parameter_counts

# name -> (block, switches or fields changed on it); "mha" changes attention, not the block.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "gpt2": ("gpt2", {}),
    "llama+layernorm": ("llama", {"norm": "layer"}),
    "llama+learned_pos": ("llama", {"positions": "learned"}),
    "llama+gelu": ("llama", {"mlp": "gelu"}),
    "llama+bias": ("llama", {"bias": True}),
    "llama_mha": ("llama", {"n_kv_heads": None}),
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "experiments/results/pretraining_ablations.json"))
    p.add_argument("--work", default="/tmp/llama_ablations", help="tokenizer, token cache, run locks")
    p.add_argument("--data", default=None, help="a text file (default: tinyshakespeare)")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-kv-heads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (without --lr-sweep)")
    p.add_argument("--lr-sweep", default=None, help="comma-separated peak rates to try on LLaMA first")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=4, help="batches per curve point (the final: all)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    unknown = set(a.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    return a


def variant_args(name: str, base: ModelArgs) -> AblationArgs:
    """The variant's model, its MLP sized to LLaMA's non-embedding parameter count."""
    block, changes = VARIANTS[name]
    reference = ablation_args(base, "llama")
    return match_parameters(ablation_args(base, block, **changes), reference)


def describe(name: str, base: ModelArgs) -> dict[str, Any]:
    """A variant's switches, attention heads, MLP size and parameter counts (for the JSON)."""
    args = variant_args(name, base)
    return {"norm": args.norm, "positions": args.positions, "mlp": args.mlp, "bias": args.bias,
            "n_kv_heads": args.kv_heads, "hidden_dim": args.ffn_hidden_dim, **parameter_counts(args)}


def settings_for(a: argparse.Namespace, lr: float, seed: int):
    from llama_from_scratch.training.run import TrainSettings

    return TrainSettings(seq_len=a.seq_len, batch_size=a.batch_size, max_steps=a.steps, lr=lr,
                         warmup_steps=a.warmup_steps, eval_every=a.eval_every, eval_batches=a.eval_batches,
                         seed=seed)


def prepare_data(a: argparse.Namespace):
    """The tokenizer (a BPE trained on the first 90% of the text, once, in WORK) and the tokens."""
    import os

    from llama_from_scratch import datafiles
    from llama_from_scratch.tokenizer.load import load_tokenizer
    from llama_from_scratch.tokenizer.sentencepiece_model import write_model
    from llama_from_scratch.tokenizer.sentencepiece_trainer import train
    from llama_from_scratch.training.data import tokenize_file

    data = Path(a.data or datafiles.path("tinyshakespeare.txt"))
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    model_file = work / f"tokenizer-{a.vocab_size}.model"
    if not model_file.exists():  # deterministic: two processes write the same bytes
        text = data.read_text(encoding="utf-8")
        tmp = work / f".{model_file.name}.{os.getpid()}"
        write_model(train(text[: len(text) * 9 // 10], a.vocab_size), tmp)
        os.replace(tmp, model_file)
    tokens = tokenize_file(data, load_tokenizer(model_file), work / "tokens")
    return data, tokens


def train_one(args: AblationArgs, settings, tokens) -> dict[str, Any]:
    """One run: the package's training step and evaluation, no checkpoints."""
    from llama_from_scratch.training.batches import BatchSampler
    from llama_from_scratch.training.checkpoint import TrainingError
    from llama_from_scratch.training.loop import bits_per_byte, evaluate, train_step
    from llama_from_scratch.training.optimizer import AdamW, param_groups

    s = settings
    torch.manual_seed(s.seed)
    model = AblationModel(args)
    model.init_weights(torch.Generator().manual_seed(s.seed))
    optimizer = AdamW(param_groups(model, s.weight_decay), lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps,
                      weight_decay=s.weight_decay)
    sampler = BatchSampler(tokens.train, s.seq_len, s.micro_batch, s.seed + 1)  # as the train command
    records, start, error = [], time.perf_counter(), None
    for step in range(s.max_steps):
        try:
            record = {"step": step + 1, **train_step(model, optimizer, sampler, s, step)}
        except TrainingError as err:
            error = str(err)
            break
        if (step + 1) % s.eval_every == 0 and step + 1 < s.max_steps:
            record["val_loss"] = evaluate(model, tokens.val, s, s.eval_batches)[0]
        records.append(record)
    loss = None if error else evaluate(model, tokens.val, s)[0]  # the whole validation split
    seconds = time.perf_counter() - start
    if records and loss is not None:
        records[-1]["val_loss"] = loss
    counts = parameter_counts(args)
    bpb = None if loss is None else bits_per_byte(loss, tokens.bytes_per_token("val"))
    return {"params_non_embedding": counts["non_embedding"], "params_total": counts["total"],
            "hidden_dim": args.ffn_hidden_dim, "tokens": len(records) * s.batch_size * s.seq_len,
            "val_loss": rounded(loss), "val_bits_per_byte": rounded(bpb),
            "train_loss_last": rounded(records[-1]["train_loss"], 4) if records else None,
            "seconds": round(seconds, 1), "curve": thin_curve(records, s.eval_every) if records else [],
            **({"error": error} if error else {})}


def run_jobs(jobs: list[dict[str, Any]], a: argparse.Namespace, base: ModelArgs, tokens, config, bar,
             lr_info: dict[str, Any] | None) -> dict[str, Any]:
    """Run every job not yet in the results file; wait for the ones another process is running."""
    out, work = Path(a.out), Path(a.work)
    while True:
        with locked(work / "results.lock"):
            results = open_results(out, config)
        done = {run_key(r) for r in results["lr_sweep"] + results["runs"]}
        pending = [j for j in jobs if run_key(j) not in done]
        bar.n = bar.total - len(pending) - bar.extra_pending
        bar.refresh()
        if not pending:
            return results
        ran = False
        for job in pending:
            name = "-".join(str(v) for v in run_key(job))
            with locked(work / "claims" / f"{name}.lock", wait=False) as mine:
                if not mine:
                    continue
                now_there = read_json(out) or {}
                if run_key(job) in {run_key(r) for r in now_there.get("runs", []) + now_there.get("lr_sweep", [])}:
                    continue  # finished by another process meanwhile
                # The sweep's LLaMA run at the chosen rate IS this run (same seed, batches, steps).
                same = [r for r in now_there.get("lr_sweep", [])
                        if (r["variant"], r["seed"], r["lr"]) == (job["variant"], job["seed"], job["lr"])]
                bar.set_postfix_str(f"{job['variant']} seed {job['seed']} lr {job['lr']:g}")
                settings = settings_for(a, job["lr"], job["seed"])
                if same:
                    run = {**same[0], **job, "copied_from": "lr_sweep"}
                else:
                    run = {**job, **train_one(variant_args(job["variant"], base), settings, tokens)}
                record(out, work / "results.lock", run, config, lr_info)
                bar.update(1)
                ran = True
        if not ran:
            time.sleep(5)  # the rest are claimed by another process: wait for their results


def main(argv: list[str] | None = None) -> int:
    from tqdm.auto import tqdm

    a = parse(argv)
    torch.set_num_threads(a.threads)
    data, tokens = prepare_data(a)
    base = ModelArgs(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
                     vocab_size=a.vocab_size, multiple_of=32, max_seq_len=a.seq_len)
    train = {k: v for k, v in asdict(settings_for(a, a.lr, 0)).items() if k not in ("lr", "seed", "save_every")}
    config = {"data": data.name, "text_sha256": tokens.meta["text_sha256"],
              "tokenizer": f"BPE of {a.vocab_size} pieces (sentencepiece_trainer, first 90% of the text)",
              "tokenizer_sha256": tokens.meta["tokenizer_sha256"], "train_tokens": len(tokens.train),
              "val_tokens": len(tokens.val), "val_bytes_per_token": rounded(tokens.bytes_per_token("val")),
              "model": asdict(base), "train": train, "variants": {v: describe(v, base) for v in VARIANTS}}
    seeds = [int(s) for s in a.seeds.split(",")]
    variants = a.variants.split(",")
    sweep = [float(x) for x in a.lr_sweep.split(",")] if a.lr_sweep else []
    sweep_jobs = [{"phase": "lr_sweep", "variant": "llama", "seed": 0, "lr": lr} for lr in sweep]
    bar = tqdm(total=len(sweep_jobs) + len(variants) * len(seeds), desc="ablation runs", unit="run",
               file=sys.stderr)
    bar.extra_pending = len(variants) * len(seeds)
    lr = a.lr
    if sweep_jobs:
        results = run_jobs(sweep_jobs, a, base, tokens, config, bar, None)
        finished = [r for r in results["lr_sweep"] if r["lr"] in sweep and r["val_loss"] is not None]
        if not finished:
            sys.exit("error: every learning rate of --lr-sweep diverged; try smaller ones")
        lr = min(finished, key=lambda r: r["val_loss"])["lr"]
    bar.extra_pending = 0
    jobs = [{"phase": "ablation", "variant": v, "seed": s, "lr": lr} for v in variants for s in seeds]
    results = run_jobs(jobs, a, base, tokens, config, bar, lr)
    bar.close()
    for row in results["summary"]:
        print(f"{row['variant']:>18}: {row['mean']} +- {row['std']} bits/byte (n={row['n']})")
    for c in results["comparisons"]:
        print(f"{c['variant']:>18} - {c['baseline']}: {c['diff']:+.4f} (noise {c['noise']:.4f}): {c['verdict']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
