"""Supervised fine-tuning (SFT): a base model trained on (topic, story) examples, loss on the answer only.

LLaMA 2's SFT settings (Touvron et al. 2023, section 3.1) and this book's, scaled to a 260K model:

    setting          LLaMA 2 (7B-70B)                   here (stories260K, one CPU thread)
    schedule         cosine                             cosine to 10% of the peak, no warmup (1)
    initial LR       2e-5                               1e-3 (2)
    weight decay     0.1                                0.1 (matrices only: training.param_groups)
    batch            64 sequences of 4,096 tokens,      16 examples, each padded to the batch's
                     examples packed one after another  longest (instructions.collate) (3)
    length           2 epochs of 27,540 examples        `steps`, default 600: some 10 epochs of
                                                        the ~1,000 examples of 8,000 stories (4)
    loss             zero on the user prompt            zero on the prompt (response_only_loss)
    optimizer        AdamW, betas (0.9, 0.95), eps 1e-5, gradient clipping at 1.0 (section 2.2)

(1) Meta names a cosine schedule and no warmup; where it ends is not said, so it ends at 10% of
    the peak as in pretraining (`training.schedule.lr_at`).
(2) 2e-5 is a fifteenth of the 7B model's pretraining peak (3e-4) and too slow for a 260K model.
    A quick check (600 self-instructed examples, 80 steps of 16, answers to the 8 held-out
    topics): the response-only loss on 100 unseen examples went from 1.52 to 1.40 at 2e-5, 1.31
    at 2e-4, 1.32 at 1e-3 and 1.36 at 3e-3; the held-out `topic` term from 0.14 (base) to 0.15,
    0.14, 0.22 and 0.21. 1e-3 is the only rate good at both.
(3) About 3,400 tokens a step instead of 262,144; 64 examples a step cost four times as long
    (about 1.5 s a step on this book's CPU) for no gain we could afford to show.
(4) A tiny model needs many passes to pick up the habit of naming the prompt's topic. Measured
    (256 answers to the held-out topics, temperature 1; self_instruct.py has the full table):
    the mean `topic` term went from 0.116 (base) to 0.305 after 300 steps and to 0.352 after
    600 on the same ~730 examples; with the default data (~1,000 examples) 600 steps gave
    0.392, and 1,000 steps on 484 examples 0.356, no better than 600 (some 33 epochs).
    About 4 minutes for 600 steps on one thread.

Each step takes the next `batch_size` examples of a stream of seeded permutations of the data
(epoch after epoch, so every batch is full), on the model's device and in its dtype (the CLI
loads float32 weights on the CPU).

`sft_dir.save_sft` writes the result as a training directory. Not handled: packing several
examples into one row (see instructions.py), gradient accumulation, mixed precision, resuming
an interrupted run.

Chapter: instruction_tuning.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from llama_from_scratch.alignment.errors import AlignmentError, stop_unless_finite
from llama_from_scratch.alignment.instructions import (Example, collate, encode_example, prompt_ids,
                                                       response_only_loss)
from llama_from_scratch.alignment.task import check_training_topic
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.training.clipping import clip_grad_norm
from llama_from_scratch.training.optimizer import AdamW, param_groups
from llama_from_scratch.training.schedule import lr_at


@dataclass(frozen=True)
class SFTSettings:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    final_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if type(self.steps) is not int or self.steps < 1 or type(self.batch_size) is not int or self.batch_size < 1:
            raise AlignmentError(f"steps and batch_size must be integers >= 1, got {self.steps!r} and "
                                 f"{self.batch_size!r}")
        if not self.lr > 0 or not self.weight_decay >= 0 or not self.clip > 0 or type(self.seed) is not int:
            raise AlignmentError(f"need lr > 0, weight_decay >= 0, clip > 0 and an integer seed; got {self}")


def encode_examples(tokenizer: Tokenizer, examples: Sequence[dict], max_len: int) -> list[Example]:
    """`encode_example` for each {"topic", "response", "ended" (optional, default True)}.

    An answer with "ended" False (a story cut at the sampling budget) is learned without its EOS:
    it is cut just before it (`encode_example` cuts to `max_len` and then adds no EOS), so the
    model is never taught to stop where the story did not. AlignmentError naming the example
    (1-based) whose topic is held out (or unusable) or whose response is empty.
    """
    if not examples:
        raise AlignmentError("there are no SFT examples: sample more stories or lower --min-score")
    encoded = []
    for number, e in enumerate(examples, start=1):
        try:
            topic = check_training_topic(e["topic"])
            limit = max_len
            if not e.get("ended", True):  # inputs prompt + answer[:-1], targets answer: no EOS
                limit = min(max_len, len(prompt_ids(tokenizer, topic)) + len(tokenizer.encode(e["response"])) - 1)
            encoded.append(encode_example(tokenizer, topic, e["response"], limit))
        except AlignmentError as err:
            raise AlignmentError(f"SFT example {number}: {err}") from None
    return encoded


def batch_indices(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless full batches of indices into `n` examples: seeded permutations, one after another."""
    generator = torch.Generator().manual_seed(seed)
    stream: list[int] = []
    while True:
        while len(stream) < batch_size:
            stream += torch.randperm(n, generator=generator).tolist()
        yield stream[:batch_size]
        stream = stream[batch_size:]


def finetune(model: Transformer, tokenizer: Tokenizer, examples: Sequence[dict],
             settings: SFTSettings, progress: bool = False) -> list[dict[str, float]]:
    """Fine-tune `model` in place; one record {"step", "lr", "loss", "grad_norm"} per step.

    errors.TrainingStopped if the loss or the gradient stops being finite (the model then holds
    the weights before the update that caused it).

    `loss` is the batch's response-only loss (nats per answer token) before that step's update.
    """
    from tqdm.auto import tqdm

    encoded = encode_examples(tokenizer, examples, model.args.max_seq_len)
    optimizer = AdamW(param_groups(model, settings.weight_decay), lr=settings.lr,
                      weight_decay=settings.weight_decay)
    batches = batch_indices(len(encoded), settings.batch_size, settings.seed)
    device = model.tok_embeddings.weight.device
    model.train()
    records: list[dict] = []
    previous = None  # the weights before the latest update
    bar = tqdm(range(settings.steps), desc="SFT", unit="step", file=sys.stderr,
               disable=not progress)
    for step in bar:
        lr = lr_at(step, settings.lr, 0, settings.steps, settings.final_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # (batch, longest) each
        tokens, targets = collate([encoded[i] for i in next(batches)], tokenizer.eos_id)
        tokens, targets = tokens.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = response_only_loss(model(tokens), targets)
        loss.backward()
        grad_norm = float(clip_grad_norm(model.parameters(), settings.clip))
        stop_unless_finite(model, previous, loss.item(), grad_norm, step, records, "SFT")
        previous = copy.deepcopy(model.state_dict())
        optimizer.step()
        records.append({"step": step + 1, "lr": lr, "loss": loss.item(),
                        "grad_norm": grad_norm})
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return records


def final_loss(records: list[dict]) -> float:
    """The mean batch loss of the last 10 steps (one batch's loss alone is noisy)."""
    last = records[-10:]
    return sum(r["loss"] for r in last) / len(last)
