"""The instruction format of supervised fine-tuning, and its loss on the answer tokens only.

An example is the task's request in LLaMA 2's chat format (chapter 1's `encode_dialog`, BOS
first, with the base model's own tokenizer), followed by the answer and EOS:

    BOS [INST] Write a story about a dog. [/INST] | Once upon a time ... EOS
    <------------------ prompt: not learned -----> <----- answer: learned ----->

The prompt ids are exactly what `align sample` feeds the model, and the answer ids are what it
should then generate, so fine-tuning teaches the very step that sampling takes. The answer text
is encoded on its own (with the tokenizer's dummy-prefix space, as `Tokenizer.decode` drops it
from a sampled answer), which reads as Meta's "[/INST] answer": an answer that began without a
space is learned with one.

Inputs and targets come shifted, as in pretraining: `targets[i]` is the token after
`tokens[i]`. The targets that are prompt tokens are `IGNORE_INDEX`, so the loss averages over
answer tokens only (LLaMA 2: "we zero-out the loss on tokens from the user prompt") and a
prompt position's prediction gets exactly zero gradient. The model still reads the prompt: the
answer's positions attend to it, so the prompt's embeddings are trained through the answer.

Length: an example has len(prompt) + len(answer) positions (EOS is a target, never an input).
A prompt longer than the context is an error (one of exactly the context's length still
learns the answer's first token, predicted at the prompt's last position). A longer answer is cut to fit
and then gets no EOS: teaching the model to stop mid-story would be wrong.

Batches are padded, not packed: each row is one example, right-padded to the batch's longest,
with padding targets ignored. Under the causal mask no real position attends to the padding
after it, so padding changes no real logit; packing several examples into one row would let
an answer attend to the previous example's text unless the mask were block-diagonal and RoPE
positions restarted, which this model's attention does not do. The cost is computation spent
on padding, small at this book's scale.

Not handled: multi-turn dialogs and system prompts (the task has one user message).

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.task import request
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.tokenizer.chat import dialog_segments, encode_dialog
from llama_from_scratch.training.loss import cross_entropy

IGNORE_INDEX = -100  # training.loss.cross_entropy's default, as in PyTorch


class Example(NamedTuple):
    tokens: list[int]  # the model's inputs: prompt, then the answer without its EOS
    targets: list[int]  # the next token at each position; IGNORE_INDEX where that is a prompt token


def prompt_text(topic: str) -> str:
    """The prompt as text, without BOS: "[INST] Write a story about a {topic}. [/INST]"."""
    ((text, _),) = dialog_segments([{"role": "user", "content": request(topic)}])
    return text


def prompt_ids(tokenizer: Tokenizer, topic: str) -> list[int]:
    """The prompt's ids: chapter 1's chat encoding of the one-message dialog, BOS first."""
    return encode_dialog([{"role": "user", "content": request(topic)}], tokenizer)


def encode_example(tokenizer: Tokenizer, topic: str, response: str, max_len: int) -> Example:
    """Inputs and targets (each at most `max_len` long, the model's context) for one answer.

    Raises AlignmentError for an invalid topic, an empty (or whitespace-only) response, or a
    prompt longer than `max_len` (no answer token could be learned). A response too long for
    `max_len` is cut to fit and loses its EOS (see the module docstring).
    """
    prompt = prompt_ids(tokenizer, topic)
    if not response.strip():
        raise AlignmentError(f"the response for topic {topic!r} is empty: there is nothing to "
                             "learn but stopping at once; leave such answers out of the "
                             "training data")
    if len(prompt) > max_len:  # the last prompt position predicts the answer's first token
        raise AlignmentError(f"the prompt has {len(prompt)} tokens, more than the context of "
                             f"{max_len}, so no answer token can be learned; use a model with "
                             "a longer context (max_seq_len)")
    answer = tokenizer.encode(response) + [tokenizer.eos_id]
    # inputs are ids[:-1], so max_len + 1 ids fill the context
    ids = (prompt + answer)[:max_len + 1]
    targets = [IGNORE_INDEX] * (len(prompt) - 1) + ids[len(prompt):]
    return Example(ids[:-1], targets)


def collate(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 tokens and targets, each `(batch, longest)`, right-padded.

    Padding inputs are `pad_id` (any id in the vocabulary: nothing reads them, see the module
    docstring); padding targets are IGNORE_INDEX.
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    longest = max(len(e.tokens) for e in examples)
    tokens = torch.full((len(examples), longest), pad_id, dtype=torch.long)  # (batch, longest)
    targets = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)  # (batch, longest)
    for row, e in enumerate(examples):
        if len(e.tokens) != len(e.targets):
            raise ValueError(f"example {row} has {len(e.tokens)} tokens but {len(e.targets)} targets; "
                             "make examples with encode_example")
        tokens[row, :len(e.tokens)] = torch.tensor(e.tokens, dtype=torch.long)
        targets[row, :len(e.targets)] = torch.tensor(e.targets, dtype=torch.long)
    return tokens, targets


def response_only_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats, float32 scalar) over the answer tokens of a batch.

    logits: `(batch, seq, vocab)`; targets: `(batch, seq)` with IGNORE_INDEX at prompt and
    padding positions. Every answer token of the batch weighs the same (a long answer counts
    more than a short one). ValueError when no target is an answer token.
    """
    return cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
