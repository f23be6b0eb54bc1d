"""The sweep runner: train every run of an IsoFLOP plan with chapter 8's loop, one record each.

    DIR/sweep.json   what the sweep is (data and tokenizer sha256, the plan's settings): a resumed
                     sweep must match it
    DIR/runs.json    a JSON list of records, rewritten atomically after every finished run:
                     {"params": N, "tokens": D, "flops": C, "loss": L, ...}

N is the non-embedding parameter count, D the tokens trained on, C = 6 N D, L the final loss on
the whole validation split (nats per token). Also kept: the budget, seed, shape, steps, epochs
(D over the training split's tokens: small models at large budgets repeat the data), the exact
training FLOPs with attention (`flops_exact`), seconds, and the validation curve `[[tokens seen,
loss], ...]` (every `steps // 8` steps on 4 validation batches, then the final loss on the whole
split: 8 to 10 points) for Chinchilla's approach 1.

Each run is the package's `train_step` and `evaluate` with LLaMA 2's AdamW settings, a linear
warmup over 10% of the steps and cosine decay to 10% of the peak rate over exactly the run's
length. A run depends only on its shape, steps and seed, so a killed sweep resumed with
`resume=True` redoes only the run it was in and ends with the same records as one never
stopped (bit for bit on the same machine and thread count). Not handled: resuming inside a run
(the longest takes a few minutes), several processes on one DIR.

Chapter: scaling_laws.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.grid import BATCH_SIZE, SEQ_LEN, VOCAB_SIZE, PlannedRun, plan
from llama_from_scratch.training.checkpoint import atomic_write
from llama_from_scratch.training.run import TrainSettings

PEAK_LR = 4e-3  # chapter 8's learning-rate sweep at 0.26M non-embedding parameters
CURVE_POINTS = 8


def settings_for(run: PlannedRun, seed: int) -> TrainSettings:
    """LLaMA 2's optimizer settings (TrainSettings' defaults) on this run's length."""
    return TrainSettings(seq_len=SEQ_LEN, batch_size=BATCH_SIZE, max_steps=run.steps, lr=PEAK_LR,
                         warmup_steps=max(1, run.steps // 10), eval_every=max(1, run.steps // CURVE_POINTS),
                         eval_batches=4, save_every=run.steps, seed=seed)


def train_run(run: PlannedRun, seed: int, tokens: Any, progress: bool = False) -> dict[str, Any]:
    """Train one planned run from scratch on `tokens` (a TokenFile); returns its record."""
    from tqdm.auto import tqdm

    from llama_from_scratch.training.batches import BatchSampler
    from llama_from_scratch.training.flops import flops_per_token
    from llama_from_scratch.training.loop import evaluate, train_step
    from llama_from_scratch.training.optimizer import AdamW, param_groups
    from llama_from_scratch.training.setup import build_model

    s = settings_for(run, seed)
    torch.manual_seed(seed)
    model = build_model(run.args, seed, torch.device("cpu"))
    optimizer = AdamW(param_groups(model, s.weight_decay), lr=s.lr, betas=(s.beta1, s.beta2), eps=s.eps,
                      weight_decay=s.weight_decay)
    sampler = BatchSampler(tokens.train, s.seq_len, s.micro_batch, seed + 1)  # as the train command
    curve, start = [], time.perf_counter()
    for step in tqdm(range(s.max_steps), desc=run.name, unit="step", leave=False, file=sys.stderr,
                     disable=not progress):
        record = train_step(model, optimizer, sampler, s, step)
        done = step + 1
        if done % s.eval_every == 0 and done < s.max_steps:
            curve.append([done * BATCH_SIZE * SEQ_LEN, round(evaluate(model, tokens.val, s, s.eval_batches)[0], 5)])
    loss = evaluate(model, tokens.val, s)[0]  # the whole validation split
    curve.append([run.tokens, round(loss, 5)])
    a = run.args
    return {"params": run.params, "tokens": run.tokens, "flops": run.flops, "loss": round(loss, 5),
            "budget": run.budget, "seed": seed, "steps": run.steps,
            "epochs": round(run.tokens / len(tokens.train), 3),
            "model": {"dim": a.dim, "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.kv_heads,
                      "hidden_dim": a.ffn_hidden_dim},
            "flops_exact": flops_per_token(a, SEQ_LEN)["train_full"] * run.tokens,
            "lr": s.lr, "train_loss": round(record["train_loss"], 5),
            "seconds": round(time.perf_counter() - start, 1), "curve": curve}


def run_key(record: dict[str, Any]) -> tuple[float, int, int, int]:
    return (float(record["budget"]), record["model"]["dim"], record["model"]["n_layers"], record["seed"])


def read_runs(out: Path) -> list[dict[str, Any]]:
    path = out / "runs.json"
    return json.loads(path.read_text()) if path.exists() else []


def write_runs(out: Path, records: list[dict[str, Any]]) -> None:
    text = "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"  # a run a line: readable diffs
    atomic_write(out / "runs.json", lambda f: f.write(text.encode()))


def sweep_identity(text_path: Path, tokens: Any, budgets: tuple[float, ...], seed: int,
                   runs: list[PlannedRun]) -> dict[str, Any]:
    return {"data": text_path.name, "text_sha256": tokens.meta["text_sha256"],
            "tokenizer_sha256": tokens.meta["tokenizer_sha256"], "vocab_size": VOCAB_SIZE,
            "train_tokens": len(tokens.train), "val_tokens": len(tokens.val), "budgets": list(budgets),
            "seed": seed, "seq_len": SEQ_LEN, "batch_size": BATCH_SIZE,
            "runs": [[r.budget, r.args.dim, r.args.n_layers, r.steps] for r in runs]}


def sweep_tokens(text_path: Path, out: Path) -> Any:
    """The sweep's tokenizer (a BPE of VOCAB_SIZE pieces on the first 90% of the text, saved in
    `out`, deterministic) and the text's tokens (cached as chapter 8's train command does)."""
    from llama_from_scratch.training.data import tokenize_file
    from llama_from_scratch.training.setup import prepare_tokenizer, run_tokenizer

    model_file = out / "tokenizer.model"
    tokenizer = run_tokenizer(out) if model_file.exists() else prepare_tokenizer(out, None, VOCAB_SIZE, str(text_path))
    tokens = tokenize_file(text_path, tokenizer)
    tokens.check_context(SEQ_LEN)
    return tokens


def run_sweep(text_path: str | Path, out: str | Path, budgets: tuple[float, ...],
              seed: int = 0, resume: bool = False, progress: bool = True, per_budget: int = 6,
              on_record: Callable[[dict[str, Any]], None] | None = None,
              step_progress: bool = False) -> list[dict[str, Any]]:
    """Run (or, with `resume`, finish) the IsoFLOP sweep of `budgets` on `text_path` into
    `out`.

    `progress` shows one bar over the sweep's FLOPs (updated once a run); `step_progress` adds
    a bar per run over its steps (the command line's choice: in a notebook, thousands of
    widget updates slow the page).

    Returns every record in `out/runs.json`. Raises ScalingError for a budget too small for the
    grid, an `out` that already holds a sweep (without `resume`) or a different one (with it).
    """
    from tqdm.auto import tqdm

    text_path, out = Path(text_path), Path(out)
    runs = plan(budgets, per_budget)
    if not text_path.is_file():
        raise ScalingError(f"--data {text_path}: no such file; give a UTF-8 text file to "
                           "train on")
    if (out / "sweep.json").exists() and not resume:
        raise ScalingError(f"{out} already holds a sweep; pass --resume to finish it, or "
                           "choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    try:
        tokens = sweep_tokens(text_path, out)
    except (OSError, ValueError) as err:
        raise ScalingError(f"--data {text_path}: {err}") from None
    identity = sweep_identity(text_path, tokens, budgets, seed, runs)
    if (out / "sweep.json").exists():
        saved = json.loads((out / "sweep.json").read_text())
        changed = sorted(k for k in identity if saved.get(k) != identity[k])
        if changed:
            raise ScalingError(f"--resume: {out} holds a different sweep "
                               f"({', '.join(changed)} differ); rerun with its settings or "
                               "choose a new --out")
    else:
        text = json.dumps(identity, indent=1) + "\n"
        atomic_write(out / "sweep.json", lambda f: f.write(text.encode()))
    records = read_runs(out)
    done = {run_key(r) for r in records}
    bar = tqdm(total=sum(r.flops for r in runs), unit="FLOP", unit_scale=True, desc="sweep",
               file=sys.stderr, disable=not progress)
    for run in runs:
        if (run.budget, run.args.dim, run.args.n_layers, seed) in done:
            bar.update(run.flops)
            continue
        bar.set_postfix_str(f"C={run.budget:.0e} N={run.params:,} {run.steps} steps")
        record = train_run(run, seed, tokens, progress and step_progress)
        records.append(record)
        write_runs(out, records)
        if on_record:
            on_record(record)
        bar.update(run.flops)
    bar.close()
    return records
