"""The tokenizer protocol: what generation, the command line and the chapters need from any tokenizer.

Every tokenizer the book loads (`SentencePieceBPE` for LLaMA 2's `.model`, `Llama2cTokenizer` for
llama2.c's `tokenizer.bin`) subclasses `Tokenizer` (the shape of Karpathy's minbpe base class):

    encode(text, bos=False, eos=False) -> list[int]    text to ids, BOS/EOS added as ids
    decode(ids) -> str                                  ids to text, as the format's own decoder
    decode_continuation(ids, prev_token) -> str         ids that follow `prev_token` in a sequence
    bos_id, eos_id, vocab_size
    stop_ids                                            ids that end a generated document
    stream_text(ids, prev_token)                        text pieces as the ids arrive

Why `decode_continuation`: llama2.c's run.c prints a piece after BOS without its leading space, so
the text of new ids depends on the token before them. SentencePiece decides from the ids alone
(its decoder drops the first dummy-prefix space of whatever it is given, as Meta's text completion
does with the new ids), so the default is `decode(ids)`.

The stop rule, one for every model: a generated document ends at EOS, or where the next document
begins, at BOS. Meta's models end a text with EOS (Meta's reference code stops at EOS only);
llama2.c's TinyStories models were trained without EOS and end a story by predicting the next
story's BOS (run.c stops there). Whatever follows a BOS belongs to another document, so stopping
at both is right for both.

Chapter: tokenizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence


def document_stop_ids(bos_id: int | None, eos_ids: Iterable[int]) -> tuple[int, ...]:
    """The ids that end a generated document: the EOS ids, then BOS (the next document begins).

    Ids below 0 or None mean "this model has no such token" (sentencepiece's -1) and are left out.
    """
    ids = [*eos_ids, bos_id]
    return tuple(dict.fromkeys(i for i in ids if i is not None and i >= 0))


class Tokenizer(ABC):
    """Text to token ids and back. Subclasses set `bos_id` and `eos_id` (-1: the model has none)."""

    bos_id: int
    eos_id: int

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids, 0..vocab_size-1; must equal the model's `vocab_size`."""

    @abstractmethod
    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of `text`, with `bos_id` in front and/or `eos_id` after when asked."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` on their own (a sequence's start: llama2.c reads them as after BOS)."""

    def decode_continuation(self, ids: Sequence[int], prev_token: int) -> str:
        """Text of `ids` that follow `prev_token` (e.g. generated ids after a prompt's last id)."""
        return self.decode(ids)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end generation: `(eos_id, bos_id)`; see the module docstring."""
        return document_stop_ids(self.bos_id, [self.eos_id])

    def stream_text(self, ids: Iterable[int], prev_token: int) -> Iterator[str]:
        """Text pieces, as `ids` arrive, whose concatenation is `decode_continuation(all ids, prev_token)`.

        Decoding token by token is wrong: a leading space may depend on the context, and a
        multi-byte character may be split over byte tokens. So decode everything so far and emit
        what is new, holding back an unfinished character (decoded as U+FFFD for now) until its
        remaining bytes arrive. Cost: quadratic in the number of ids (fine for a few thousand).
        """
        seen: list[int] = []
        emitted = ""
        for t in ids:
            seen.append(t)
            stable = self.decode_continuation(seen, prev_token).rstrip("\ufffd")
            if stable.startswith(emitted) and len(stable) > len(emitted):
                yield stable[len(emitted):]
                emitted = stable
        text = self.decode_continuation(seen, prev_token)
        if not text.startswith(emitted):  # never seen with either format; fail loudly, not silently
            raise RuntimeError(f"streamed text {emitted!r} is not a prefix of the full decode {text!r}")
        if len(text) > len(emitted):
            yield text[len(emitted):]
