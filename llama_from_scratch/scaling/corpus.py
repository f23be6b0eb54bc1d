"""A larger corpus every machine has: the Python standard library's own source, read at run time.

tinyshakespeare is about 1 MB (560K tokens with the sweep's tokenizer), so at the sweep's larger
budgets the smaller models see it tens of times. The standard library's `.py` files (without its
test suites and site-packages) are about 12 MB on Python 3.11: enough that most runs see each
token only once or twice, to tell the effect of repetition from that of scale. The text differs
between Python versions, so a sweep on it records the Python version and the text's sha256; it is
never committed. Not handled: non-UTF-8 files (skipped) and symlinked folders (not followed).

Chapter: scaling_laws.
"""

from __future__ import annotations

import platform
import sysconfig
from pathlib import Path

from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.training.checkpoint import atomic_write

SKIPPED_FOLDERS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}


def stdlib_sources(root: str | Path | None = None) -> list[Path]:
    """The standard library's `.py` files under `root` (default: this Python's), sorted by path."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise ScalingError(f"{root} is not a folder: point at a Python standard library")
    files = sorted(p for p in root.rglob("*.py")
                   if not SKIPPED_FOLDERS.intersection(p.relative_to(root).parts[:-1]))
    if not files:
        raise ScalingError(f"{root} holds no .py files outside test suites and site-packages")
    return files


def write_stdlib_corpus(out: str | Path, root: str | Path | None = None) -> dict[str, object]:
    """Write every standard-library source file (each after a `# file: relative/path` line) into
    one UTF-8 text file `out`, atomically; returns {"python", "files", "bytes"}."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    parts = []
    for path in stdlib_sources(root):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        parts.append(f"# file: {path.relative_to(root).as_posix()}\n{text.rstrip()}\n\n")
    data = "".join(parts).encode("utf-8")
    atomic_write(Path(out), lambda f: f.write(data))
    return {"python": platform.python_version(), "files": len(parts), "bytes": len(data)}
