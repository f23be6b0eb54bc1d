"""Input checks shared by the tokenizers: text must be encodable, ids must be in range.

Chapter: tokenizer.
"""

from __future__ import annotations


class TokenizerInputError(ValueError):
    """Text that cannot be encoded (lone surrogates) or ids that cannot be decoded."""


def check_text(text: str) -> None:
    """Refuse what is not text: non-str input, and lone surrogates (they have no UTF-8 form)."""
    if not isinstance(text, str):
        raise TokenizerInputError(f"expected text (str), got {type(text).__name__}; decode bytes as UTF-8 first")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TokenizerInputError(
            f"text has a lone surrogate {text[err.start]!r} at index {err.start}, which is not a valid "
            "Unicode character and has no UTF-8 form; fix the input (e.g. decode bytes with errors='replace')"
        ) from None


def check_ids(ids: list[int], vocab_size: int) -> None:
    for i in ids:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < vocab_size:
            raise TokenizerInputError(f"token id {i!r} is out of range: the vocabulary has {vocab_size} ids (0..{vocab_size - 1})")
