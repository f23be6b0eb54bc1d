"""The training loop: LLaMA 2's recipe, one optimizer step at a time, resumable bit for bit.

One step: set the learning rate from the schedule, run `grad_accum` micro-batches forward
and backward (the loss of each divided by `grad_accum`, so the gradient is that of the
whole batch), clip the global gradient norm, and take one AdamW step. Every `eval_every`
steps the validation loss is measured on fixed windows; every `save_every` steps (and at
the end) the whole state is saved: model, optimizer, step, the batch sampler's generator
and PyTorch's global RNG. Resuming from it continues exactly where the run was, so a run
killed and resumed ends with the same weights, bit for bit, as one that never stopped (on
the same machine with the same thread count). Several processes (torchrun) train through a
`distributed.parallel.Parallel`: DDP or FSDP, each rank on its share of the same windows;
rank 0 alone logs and saves, and the checkpoint does not depend on the number of ranks.
Not handled: dropout (LLaMA has none), mixed-precision loss scaling (bfloat16 needs none).

Chapter: pretraining (also shown in: scale_out).
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from llama_from_scratch.distributed.parallel import Parallel
from llama_from_scratch.training.checkpoint import TrainingError, atomic_write, save_state
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.batches import BatchSampler, batches_that_fit, eval_windows
from llama_from_scratch.training.loss import cross_entropy
from llama_from_scratch.training.run import CHECKPOINT_FILE, METRICS_FILE, TrainSettings
from llama_from_scratch.training.schedule import lr_at


def autocast(settings: TrainSettings, device: torch.device):
    """bfloat16 autocast for the forward pass when asked (weights and optimizer stay float32)."""
    if settings.dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`(batch, seq, vocab)` logits of our Transformer, or of a transformers model (`.logits`)."""
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


SINGLE = Parallel()  # one process: the default way to run


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               sampler: BatchSampler, settings: TrainSettings, step: int,
               parallel: Parallel = SINGLE) -> dict[str, float]:
    """One optimizer step (`step` is 0-based: the number of steps taken before this one).

    Returns the step's learning rate, mean training loss (nats per token) and gradient norm
    before clipping (both the same on every rank). A non-finite loss or gradient raises
    `TrainingError` before the weights change.
    """
    device = next(model.parameters()).device
    lr = lr_at(step, settings.lr, settings.warmup_steps, settings.max_steps,
               settings.final_lr_ratio)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for i in range(settings.grad_accum):
        x, y = parallel.share(*sampler.next())  # (micro_batch / ranks, seq_len) each
        x, y = x.to(device), y.to(device)
        with parallel.gradient_sync(model, last_micro_batch=i == settings.grad_accum - 1):
            with autocast(settings, device):
                logits = logits_of(model, x)  # (micro_batch / ranks, seq_len, vocab)
            loss = cross_entropy(logits, y) / settings.grad_accum  # mean over the whole batch
            loss.backward()
        total += loss.detach()
    grad_norm = clip_grad_norm(model.parameters(), settings.clip)
    loss_value, norm_value = parallel.mean(total).item(), parallel.as_float(grad_norm)
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        raise TrainingError(f"the training loss became {loss_value} (gradient norm "
                            f"{norm_value}) at step {step + 1}; the weights were not updated. "
                            "Lower --lr or raise --warmup-steps, then resume from the last "
                            "good checkpoint")
    optimizer.step()
    return {"lr": lr, "train_loss": loss_value, "grad_norm": norm_value}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, tokens: Any, settings: TrainSettings,
             n_batches: int | None = None) -> tuple[float, int]:
    """Mean loss (nats per token) over fixed windows of `tokens` from the start, and how many
    tokens it covers; `n_batches=None` covers every full window, and more batches than the
    tokens hold are capped to what fits. Deterministic."""
    if n_batches is not None:
        n_batches = min(n_batches, batches_that_fit(len(tokens), settings.seq_len, settings.micro_batch))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in eval_windows(tokens, settings.seq_len, settings.micro_batch, n_batches):
        x, y = x.to(device), y.to(device)
        with autocast(settings, device):
            logits = logits_of(model, x)
        total += cross_entropy(logits, y).item() * y.numel()  # every window is full: equal weights
        count += y.numel()
    model.train(was_training)
    return total / count, count


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Nats per token -> bits per byte of text: comparable across tokenizers."""
    return loss_nats / math.log(2) / bytes_per_token


def trim_metrics(folder: Path, last_step: int) -> None:
    """Drop metric lines after `last_step`: a killed run may have logged steps it never saved."""
    path = folder / METRICS_FILE
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    atomic_write(path, lambda f: f.write("".join(line + "\n" for line in keep).encode()))


def fit(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: BatchSampler, val_tokens: Any,
        settings: TrainSettings, folder: Path, start_step: int = 0, bytes_per_token: float | None = None,
        progress: bool = True, extra_state: dict[str, Any] | None = None, parallel: Parallel = SINGLE) -> int:
    """Train from `start_step` to `settings.max_steps`, logging to `folder/metrics.jsonl` and
    saving `folder/checkpoint.pt` (rank 0 only); returns the last step. `extra_state` is saved
    with every checkpoint (e.g. the run's identity)."""
    from tqdm.auto import tqdm

    model.train()
    writer = parallel.world.is_writer
    tokens_per_step = settings.batch_size * settings.seq_len
    last_saved = start_step
    bar = tqdm(range(start_step, settings.max_steps), initial=start_step, total=settings.max_steps,
               desc="training", unit="step", file=sys.stderr, disable=not (progress and writer))
    with open(folder / METRICS_FILE, "a") if writer else nullcontext() as log:
        for step in bar:
            start = time.perf_counter()
            try:
                record = train_step(model, optimizer, sampler, settings, step, parallel)
            except TrainingError as err:
                raise TrainingError(f"{err} (the last good checkpoint is step {last_saved} in {folder})") from None
            record = {"step": step + 1, **record,
                      "tokens_per_s": tokens_per_step / (time.perf_counter() - start)}
            done = step + 1
            if done % settings.eval_every == 0 or done == settings.max_steps:
                record["val_loss"], _ = evaluate(parallel.unwrap(model), val_tokens, settings, settings.eval_batches)
                if bytes_per_token:
                    record["val_bits_per_byte"] = bits_per_byte(record["val_loss"], bytes_per_token)
            if writer:
                log.write(json.dumps(record) + "\n")
                log.flush()
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", lr=f"{record['lr']:.1e}")
            if done % settings.save_every == 0 or done == settings.max_steps:
                state = training_state(model, optimizer, sampler, done, extra_state, parallel)  # every rank
                if writer:
                    save_state(folder / CHECKPOINT_FILE, state)
                last_saved = done
    return settings.max_steps


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   sampler: BatchSampler, step: int, extra: dict[str, Any] | None = None,
                   parallel: Parallel = SINGLE) -> dict[str, Any]:
    """Everything a bit-exact resume needs, in types `torch.load(weights_only=True)` accepts.
    With several ranks every rank must call it (FSDP gathers the shards); rank 0's is
    complete."""
    return {"format": 1, "step": step, "model": parallel.model_state(model),
            "optimizer": parallel.optimizer_state(model, optimizer),
            "sampler": sampler.state_dict(), "torch_rng": torch.get_rng_state(),
            **(extra or {})}


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            sampler: BatchSampler, parallel: Parallel = SINGLE) -> int:
    """Put a saved training state back (written by any number of ranks); returns its step."""
    parallel.load(model, optimizer, state["model"], state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])

