"""Committed experiment results, read by the chapters inside the repository or on Colab.

Slow experiments run as scripts (`experiments/`) and commit small files under
`experiments/results/`. A chapter run inside a checkout reads them from there; on Colab, where
only the package is installed, they are downloaded from the book's repository on GitHub.

Chapter: scaling_laws.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"
RAW = "https://raw.githubusercontent.com/llama-from-scratch/llama-from-scratch/main/experiments/results/"


def committed(name: str) -> bytes:
    """The bytes of `experiments/results/{name}`: the checkout's copy, else GitHub's."""
    if (RESULTS / name).is_file():
        return (RESULTS / name).read_bytes()
    with urllib.request.urlopen(RAW + name, timeout=60) as response:
        return response.read()


def committed_folder(name: str, files: tuple[str, ...], dest: str | Path) -> Path:
    """`experiments/results/{name}/` with the given `files`: the checkout's folder itself, else a
    copy downloaded into `dest` (written under a temporary name, then renamed)."""
    if all((RESULTS / name / f).is_file() for f in files):
        return RESULTS / name
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        if not (dest / f).is_file():
            tmp = dest / f".{f}.part"
            tmp.write_bytes(committed(f"{name}/{f}"))
            os.replace(tmp, dest / f)
    return dest
