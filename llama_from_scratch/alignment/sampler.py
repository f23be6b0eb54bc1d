"""What `align sample` does: one seeded answer per prompt, in the task's instruction format.

Every prompt (a line of a prompts file) gets its own draw from its own generator, seeded by
`line_seed(seed, index)`: a topic repeated on 12 lines gets 12 independent answers, the same
ones on every run, and a line's answer does not depend on the other lines (each is generated
alone, batch 1, so not even float rounding differs with the file's contents). The seed is mixed
with numpy's `SeedSequence` rather than added to the index: with `seed + index`, seed 1 would
repeat seed 0's answers shifted by one line.

Sampling as `shared/data/alignment/README.md` defines it for measurement: temperature 1.0, top-p
1.0, until EOS, or BOS (llama2.c's stories260K ends a story by starting the next one), or 256 new
tokens. The response is `tokenizer.decode` of the new ids, the stop token left out (so
"Once upon a time", without the space the token carries after "[/INST]").

The tokenizer, unless given, is found by the issue's rule: the checkpoint directory's own
(tokenizer.model or tokenizer.bin inside it), else tokenizer.model beside the checkpoint (the
rule `generate` and `chat` use), else llama2.c's `tok{vocab_size}.bin` beside a `.bin`
checkpoint, so `stories260K/stories260K.bin` finds `stories260K/tok512.bin`.

Chapter: instruction_tuning (also shown in: reward_model, rlhf).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from llama_from_scratch.alignment.errors import AlignmentError
from llama_from_scratch.alignment.instructions import prompt_ids, prompt_text
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.tokenizer.base import Tokenizer

TEMPERATURE = 1.0
TOP_P = 1.0
MAX_NEW_TOKENS = 256


def line_seed(seed: int, index: int) -> int:
    """The seed of line `index` (0-based) of a run seeded with `seed`: a 63-bit int."""
    if type(seed) is not int or seed < 0 or type(index) is not int or index < 0:
        raise AlignmentError(f"the seed and the line index must be integers >= 0, got {seed!r} and {index!r}")
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0]) >> 1


def find_tokenizer(checkpoint: str | Path, vocab_size: int, given: str | Path | None = None) -> Path:
    """`given` when there is one, else the first file of the issue's rule that exists.

    AlignmentError, naming every place looked at, when none does.
    """
    if given:
        return Path(given)
    checkpoint = Path(checkpoint)
    inside = [checkpoint / "tokenizer.model", checkpoint / "tokenizer.bin"] if checkpoint.is_dir() else []
    llama2c = [checkpoint.parent / f"tok{vocab_size}.bin"] if checkpoint.suffix == ".bin" else []
    candidates = inside + [checkpoint.parent / "tokenizer.model"] + llama2c
    for path in candidates:
        if path.is_file():
            return path
    raise AlignmentError(f"no tokenizer found for {checkpoint}: looked for {', '.join(map(str, candidates))}; "
                         "pass --tokenizer PATH")


def load_tokenizer_for(checkpoint: str | Path, vocab_size: int, given: str | Path | None = None) -> Tokenizer:
    """The tokenizer at `find_tokenizer(...)`, checked to have the model's `vocab_size` tokens."""
    from llama_from_scratch.tokenizer.load import load_tokenizer

    path = find_tokenizer(checkpoint, vocab_size, given)
    try:
        tokenizer = load_tokenizer(path)
    except (ValueError, OSError) as err:  # a missing file, or neither format (ModelFormatError)
        raise AlignmentError(str(err)) from None
    if tokenizer.vocab_size != vocab_size:
        raise AlignmentError(f"tokenizer {path} has {tokenizer.vocab_size} tokens but the model's vocabulary "
                             f"is {vocab_size}: they do not belong together; pass the right --tokenizer")
    return tokenizer


def sample_ids(model: Transformer, tokenizer: Tokenizer, topic: str, seed: int,
               temperature: float = TEMPERATURE, top_p: float = TOP_P,
               max_new_tokens: int = MAX_NEW_TOKENS) -> list[int]:
    """The new ids of one answer to the topic's prompt (the stop token, EOS or BOS, left out),
    drawn by a generator seeded with `seed`. At most `max_new_tokens`, fewer at the context's end."""
    prompt = prompt_ids(tokenizer, topic)
    try:
        (ids,) = generate(model, [prompt], max_new_tokens, temperature=temperature, top_k=None, top_p=top_p,
                          stop_ids=tokenizer.stop_ids, seed=seed)
    except ValueError as err:  # a bad setting, or a prompt longer than the context
        raise AlignmentError(str(err)) from None
    return ids


def sample_rows(model: Transformer, tokenizer: Tokenizer, topics: Sequence[str], seed: int,
                temperature: float = TEMPERATURE, top_p: float = TOP_P,
                max_new_tokens: int = MAX_NEW_TOKENS, progress: bool = False) -> Iterator[dict[str, str]]:
    """{"topic", "prompt", "response"} for each topic in order, topic i drawn with `line_seed(seed, i)`.

    `progress` shows a bar on stderr. Rows come one at a time, as each answer is finished.
    """
    from tqdm.auto import tqdm

    for index, topic in enumerate(tqdm(topics, desc="sampling", unit="answer", file=sys.stderr,
                                       disable=not progress)):
        ids = sample_ids(model, tokenizer, topic, line_seed(seed, index), temperature, top_p, max_new_tokens)
        yield {"topic": topic, "prompt": prompt_text(topic), "response": tokenizer.decode(ids)}
