"""The book's data files: where they are, and how to get them.

`path("tinyshakespeare.txt")` returns a local path, in this order:

1. `$LLAMA_DATA_DIR/<name>` when the variable is set (CI and `make` point it at
   `../shared/data`);
2. otherwise the user cache, `$XDG_CACHE_HOME/llama_from_scratch` (default
   `~/.cache/llama_from_scratch`).

A file missing there is downloaded from its public home into that folder, with a
progress bar, and kept only if its sha256 matches. Offline, the error names the file,
the URL and the variable to set. Not handled: resuming a partial download (it restarts).

`BOOK_FILES` are made for the book and have no public home (the alignment task's word lists
and topics): they are only looked up in the data folder, never downloaded.

Chapter: warmup.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ENV_VAR = "LLAMA_DATA_DIR"


@dataclass(frozen=True)
class DataFile:
    name: str  # path relative to the data directory, e.g. "stories260K/tok512.bin"
    url: str
    sha256: str
    size: int  # bytes
    about: str


FILES: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile(
            "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1_115_394,
            "Shakespeare's plays (public domain), the char-rnn / nanoGPT corpus",
        ),
        DataFile(
            "llama2_tokenizer.model",
            "https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.model",
            "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347",
            499_723,
            "Meta's LLaMA 2 SentencePiece tokenizer (32,000 pieces)",
        ),
        DataFile(
            "stories260K/stories260K.bin",
            "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin",
            "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
            1_056_540,
            "a 260K-parameter LLaMA 2 model trained on TinyStories (llama2.c legacy format)",
        ),
        DataFile(
            "stories260K/tok512.bin",
            "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin",
            "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
            6_227,
            "stories260K's 512-token tokenizer (llama2.c tokenizer.bin format)",
        ),
    ]
}


# Made for the book, not downloaded: found in the data folder (shared/data beside a checkout) or not at all.
BOOK_FILES: dict[str, DataFile] = {
    f.name: f
    for f in [
        DataFile("alignment/lexicon.json", "", "ef95289247fdc6e3677ed89109dc40d5cca75c40492a51e1a1a4b8c66b602584",
                 858, "the alignment task's positive and negative word lists (the true score's sentiment)"),
        DataFile("alignment/topics.json", "", "ae16a41ebbb789669c1a1f1b83c4c2d34cdffbaa56ee13a835e50fabd02d7039",
                 300, "the alignment task's training and held-out topics"),
    ]
}


class DataError(RuntimeError):
    """A data file is unknown, cannot be downloaded, or arrived corrupted."""


def data_dir() -> Path:
    """The folder data files are read from and downloaded to."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return user_cache_dir()


def user_cache_dir() -> Path:
    """The package's folder in the user cache: `$XDG_CACHE_HOME/llama_from_scratch` (default
    `~/.cache/llama_from_scratch`), whatever `$LLAMA_DATA_DIR` says."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(cache) / "llama_from_scratch"


def sha256_of(file: Path | BinaryIO) -> str:
    """Hex sha256 of a file, by path or an open binary file (read from where it is to the end)."""
    if not hasattr(file, "read"):
        with open(file, "rb") as f:
            return sha256_of(f)
    digest = hashlib.sha256()
    for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Download `url` to `dest` with a progress bar; keep it only if its sha256 matches.

    The bytes go to a temporary file beside `dest` and are renamed into place at the
    end, so an interrupted download never leaves a truncated file under the real name.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        got = sha256_of(tmp)
        if got != sha256:
            raise DataError(
                f"{dest.name} downloaded from {url} has sha256 {got}, expected {sha256}: "
                "the download is corrupted or the file changed upstream. It was not kept; try again, "
                f"or put a verified copy in {dest.parent}."
            )
        tmp.replace(dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def path(name: str, download_if_missing: bool = True) -> Path:
    """Local path of the named data file (see the module docstring for where it looks).

    `name` is one of `FILES` (e.g. "tinyshakespeare.txt", "stories260K/tok512.bin") or of
    `BOOK_FILES` (e.g. "alignment/topics.json", never downloaded). Raises `DataError` naming
    the file, its URL and `$LLAMA_DATA_DIR` when the file is neither local nor downloadable.
    """
    if name in BOOK_FILES:
        local = data_dir() / name
        if local.is_file():
            return local
        raise DataError(f"{name} is not in {data_dir()}: it is made for the book and has no "
                        f"download; set {ENV_VAR} to the book's data folder (shared/data "
                        f"beside a checkout), which holds it.")
    if name not in FILES:
        raise DataError(f"unknown data file {name!r}; "
                        f"known files: {', '.join([*FILES, *BOOK_FILES])}")
    entry = FILES[name]
    folder = data_dir()
    local = folder / entry.name
    if local.is_file():
        return local
    if not download_if_missing:
        raise DataError(f"{name} is not in {folder}; "
                        f"set {ENV_VAR} to a folder that holds it.")
    try:
        return download(entry.url, local, entry.sha256)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(
            f"{name} is not in {folder} and could not be downloaded from {entry.url} ({err}). "
            f"Download it by hand into {folder}, or set {ENV_VAR} to a folder that already "
            f"holds {name} (for example the shared/data folder beside a checkout of the book)."
        ) from err
