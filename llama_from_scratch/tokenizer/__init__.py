"""Chapter 1: tokenizers, from byte-level BPE to LLaMA 2's SentencePiece model, bit for bit.

- bpe_basic: readable byte-level BPE (train by recounting, encode/decode with a merge list)
- bpe_fast: the same merges, fast (distinct words counted once, incremental pair counts)
- protobuf_wire: the protobuf wire format (varints, records), by hand
- sentencepiece_model: read/write SentencePiece `.model` files (ModelProto) with it
- sentencepiece_merge: the BPE merge loop of sentencepiece's encoder (a priority queue)
- sentencepiece_bpe: encode/decode exactly like sentencepiece's BPE model (LLaMA 2's tokenizer)
- sentencepiece_trainer: a SentencePiece-style BPE trainer writing `.model` files
- llama2c: llama2.c's tokenizer.bin
- chat: the LLaMA 2 chat prompt format
- checks: input checks and TokenizerInputError; cli: `python -m llama_from_scratch tokenize`
"""

from __future__ import annotations

from pathlib import Path

from .chat import encode_dialog
from .llama2c import Llama2cTokenizer
from .sentencepiece_bpe import SentencePieceBPE, TokenizerInputError
from .sentencepiece_model import ModelFormatError, read_model, write_model

__all__ = ["SentencePieceBPE", "Llama2cTokenizer", "TokenizerInputError", "ModelFormatError",
           "encode_dialog", "load_tokenizer", "read_model", "write_model"]


def load_tokenizer(path: str | Path) -> SentencePieceBPE | Llama2cTokenizer:
    """A SentencePiece `.model` file or a llama2.c `tokenizer.bin`, recognised by its content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {path} does not exist")
    try:
        return SentencePieceBPE.from_file(path)
    except ModelFormatError as sp_error:
        try:
            return Llama2cTokenizer.from_file(path)
        except ModelFormatError:
            raise ModelFormatError(
                f"{path} is neither a SentencePiece .model file nor a llama2.c tokenizer.bin; "
                "pass a tokenizer such as llama2_tokenizer.model or stories260K/tok512.bin"
            ) from sp_error
