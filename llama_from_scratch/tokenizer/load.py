"""Open any tokenizer file the book uses, recognised by its content, not its name.

Chapter: tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer
from llama_from_scratch.tokenizer.protobuf_wire import ModelFormatError
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A SentencePiece `.model` file (`SentencePieceBPE`) or a llama2.c `tokenizer.bin`
    (`Llama2cTokenizer`), recognised by its content."""
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
