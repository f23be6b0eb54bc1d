"""A text file tokenized once into a memory-mapped token file, with a JSON sidecar; reused after.

    <cache>/<stem>-<sha12 of the text>-<sha12 of the tokenizer>.tokens   BOS, then encode(text)
    <cache>/<same name>.json                                              the sidecar

The token file is raw little-endian uint16 (vocabularies up to 65,536 ids) or uint32. The sidecar
records what the tokens are of (the text's and the tokenizer's sha256), the counts, where the
validation split starts (the last 10% of the tokens), the UTF-8 bytes each split covers (for bits
per byte) and the token file's own size and sha256.

Written atomically (checkpoint.atomic_write): each file goes to a temporary name in the same
folder (with the writer's pid in it), is flushed and fsync'd, then renamed into place; the sidecar
last. A reader trusts the token file only if the sidecar matches the text, the tokenizer and the
token file's size and sha256; anything else (a kill mid-write, a missing or stale file) is rebuilt. Two processes
building the same cache at once write the same bytes, so whichever rename lands last, the pair
is valid. A temporary file left by a process that no longer runs is deleted by the next build.

Bytes per split: `train_bytes` = UTF-8 length of `decode(train tokens)`, `val_bytes` = the text's
bytes minus that. Exact for a lossless tokenizer (LLaMA 2's, llama2.c's with byte fallback),
except when the split point falls inside one character's byte-fallback tokens (then up to 3 bytes
off). Not handled: texts that do not fit in memory (the text is read whole).

Chapter: pretraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from llama_from_scratch.datafiles import sha256_of, user_cache_dir
from llama_from_scratch.tokenizer.base import Tokenizer
from llama_from_scratch.training.batches import check_split
from llama_from_scratch.training.checkpoint import atomic_write
from llama_from_scratch.training.corpus_encoding import encode_corpus, tokenizer_identity

FORMAT = 1
PROGRESS_BYTES = 4 << 20  # a progress bar for texts larger than this
FLUSH_IDS = 1 << 20  # ids buffered before they are written
META_KEYS = ("format", "text_sha256", "text_bytes", "tokenizer_sha256", "tokenizer_class", "vocab_size",
             "dtype", "n_tokens", "val_start", "train_bytes", "val_bytes", "bos", "tokens_bytes", "tokens_sha256")


class CorpusError(ValueError):
    """A text file that cannot be a corpus: not UTF-8, or empty."""


class TokenCacheError(ValueError):
    """A token file whose sidecar is missing, unreadable or does not match it (rebuilt by tokenize_file)."""


def default_cache_dir() -> Path:
    """`tokens/` in the package's user cache (`$XDG_CACHE_HOME` or ~/.cache, /llama_from_scratch)."""
    return user_cache_dir() / "tokens"


class TokenFile:
    """Open with `TokenFile.open(path)`: the token file at `path`, checked against its sidecar."""

    def __init__(self, path: Path, meta: dict[str, Any], tokens: np.ndarray):
        self.path, self.meta, self.tokens = path, meta, tokens

    @classmethod
    def open(cls, path: str | Path, text_sha256: str | None = None, tokenizer_sha256: str | None = None) -> "TokenFile":
        """Memory-map `path` after checking its sidecar (and, when given, the text's and tokenizer's
        sha256). Raises TokenCacheError saying what does not match."""
        path = Path(path)
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenCacheError(f"{sidecar} is missing") from None
        except (OSError, ValueError) as err:
            raise TokenCacheError(f"{sidecar} cannot be read: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or any(k not in meta for k in META_KEYS):
            raise TokenCacheError(f"{sidecar} is not a format-{FORMAT} token sidecar")
        for key, want in (("text_sha256", text_sha256), ("tokenizer_sha256", tokenizer_sha256)):
            if want is not None and meta[key] != want:
                raise TokenCacheError(f"{sidecar} is for {key} {meta[key][:12]}..., not {want[:12]}...")
        dtype = np.dtype(meta["dtype"])
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != meta["tokens_bytes"] or size != meta["n_tokens"] * dtype.itemsize:
                    raise TokenCacheError(f"{path} holds {size} bytes; its sidecar says {meta['tokens_bytes']} "
                                          f"({meta['n_tokens']} {dtype} tokens)")
                if sha256_of(f) != meta["tokens_sha256"]:
                    raise TokenCacheError(f"{path}'s sha256 does not match its sidecar's")
                f.seek(0)
                # Mapped from the file just checked (the mapping outlives `f`), not by name again.
                tokens = np.memmap(f, dtype=dtype, mode="r", shape=(meta["n_tokens"],))
        except FileNotFoundError:
            raise TokenCacheError(f"{path} is missing") from None
        return cls(path, meta, tokens)

    @property
    def train(self) -> np.ndarray:
        """The first 90% of the tokens (a view)."""
        return self.tokens[:self.meta["val_start"]]

    @property
    def val(self) -> np.ndarray:
        """The last 10% of the tokens, `n_tokens // 10` of them (a view)."""
        return self.tokens[self.meta["val_start"]:]

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of text per token in `split` ("train" or "val"): bits per byte = nats per
        token / ln 2 / this."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        return self.meta[f"{split}_bytes"] / len(getattr(self, split))

    def check_context(self, seq_len: int) -> None:
        """Raise CorpusTooShortError unless both splits hold one window of `seq_len` + 1 tokens."""
        shortest = min(len(self.train), len(self.val))
        check_split(shortest, seq_len, f"{self.meta.get('text_name', 'the text')} gives {len(self.train)} training "
                    f"and {len(self.val)} validation tokens (the last 10%): the shorter split")


def tokenize_file(text_path: str | Path, tokenizer: Tokenizer, cache_dir: str | Path | None = None) -> TokenFile:
    """The tokens of `text_path` (BOS first, then `tokenizer.encode(text)`), from the cache when
    the text and tokenizer are unchanged, else tokenized now (see the module docstring).

    `cache_dir` defaults to `default_cache_dir()`. Raises CorpusError for text that is not UTF-8
    or is empty, TypeError for a tokenizer class the cache cannot fingerprint.
    """
    text_path = Path(text_path)
    raw = text_path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{text_path} is not UTF-8 text: byte {err.start} is {raw[err.start:err.start + 1]!r}; "
                          "convert the file to UTF-8") from None
    if not text:
        raise CorpusError(f"{text_path} is empty: there is nothing to train on")
    text_sha, tok_sha = hashlib.sha256(raw).hexdigest(), tokenizer_identity(tokenizer)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stem = f"{text_path.stem}-{text_sha[:12]}-{tok_sha[:12]}"
    path = folder / f"{stem}.tokens"
    try:
        return TokenFile.open(path, text_sha, tok_sha)
    except TokenCacheError:
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_orphans(folder, stem)
        _build(path, text, text_path.name, text_sha, tokenizer, tok_sha, show_progress=len(raw) > PROGRESS_BYTES)
    except PermissionError as err:
        raise PermissionError(f"cannot write the token cache in {folder} ({err}); pass a writable cache_dir") from None
    return TokenFile.open(path, text_sha, tok_sha)


def _build(path: Path, text: str, text_name: str, text_sha: str, tokenizer: Tokenizer, tok_sha: str,
           show_progress: bool) -> None:
    from tqdm.auto import tqdm

    dtype = np.dtype("<u2") if tokenizer.vocab_size <= 1 << 16 else np.dtype("<u4")
    bos = tokenizer.bos_id >= 0
    digest, chunks = hashlib.sha256(), []

    def write_tokens(f: Any) -> None:
        buffer = [tokenizer.bos_id] if bos else []
        with tqdm(total=len(text), unit="char", unit_scale=True, desc=f"tokenizing {text_name}",
                  file=sys.stderr, disable=not show_progress) as bar:
            for ids, n_chars in encode_corpus(text, tokenizer):
                buffer += ids
                bar.update(n_chars)
                if len(buffer) >= FLUSH_IDS:
                    chunks.append(_write(f, buffer, dtype, digest))
                    buffer = []
            chunks.append(_write(f, buffer, dtype, digest))

    atomic_write(path, write_tokens)
    tokens = np.concatenate(chunks)
    n_tokens = len(tokens)
    val_start = n_tokens - n_tokens // 10
    text_bytes = len(text.encode("utf-8"))
    train_bytes = min(len(tokenizer.decode(tokens[int(bos):val_start].tolist()).encode("utf-8")), text_bytes)
    meta = {"format": FORMAT, "text_name": text_name, "text_sha256": text_sha, "text_bytes": text_bytes,
            "tokenizer_sha256": tok_sha, "tokenizer_class": type(tokenizer).__name__,
            "vocab_size": tokenizer.vocab_size, "dtype": "uint16" if dtype.itemsize == 2 else "uint32",
            "n_tokens": n_tokens, "val_start": val_start, "train_bytes": train_bytes,
            "val_bytes": text_bytes - train_bytes, "bos": bos, "tokens_bytes": n_tokens * dtype.itemsize,
            "tokens_sha256": digest.hexdigest()}
    # Last: the sidecar vouches for the token file renamed into place above.
    atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=1).encode("utf-8")))


def _write(f: Any, ids: list[int], dtype: np.dtype, digest: Any) -> np.ndarray:
    array = np.asarray(ids, dtype=dtype)
    data = array.tobytes()
    f.write(data)
    digest.update(data)
    return array


def _remove_orphans(folder: Path, stem: str) -> None:
    """Delete temporary files of `stem` whose writer (the pid in their name) no longer runs."""
    for tmp in folder.glob(f".{stem}.*.tmp"):  # checkpoint.atomic_write's names: .<name>.<pid>.tmp
        pid = tmp.name.rsplit(".", 2)[1]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True

