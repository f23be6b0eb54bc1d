"""Training checkpoints that survive a kill at any instant, and one run per directory.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'd, then
renamed over the old one (`os.replace` is atomic on POSIX), and the folder is fsync'd so
the rename itself is on disk. A kill before the rename leaves the previous checkpoint
untouched (plus a stray temporary file, removed on the next save); a kill after it leaves
the new one. A full disk fails the write of the temporary file: the error says so and the
previous checkpoint is intact.

`RunLock` holds an exclusive `flock` on `DIR/.lock` for the whole run. The kernel drops
the lock when the process dies, however it dies, so a killed run never leaves it stuck.
Checkpoints load with `weights_only=True`: tensors, numbers, strings and plain containers
only; nothing in the file can run code. Not handled: network file systems whose `flock`
or `rename` are not atomic.

Chapter: pretraining.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class TrainingError(RuntimeError):
    """A training run cannot go on: what went wrong and what to do (exit status 2 in the CLI)."""


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (POSIX: the directory entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, rename it over `path`.

    Any failure (a full disk, a kill, an exception in `write`) leaves `path` as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Build a folder's new contents in a hidden sibling (yielded), then swap it in for `out`.

    A crash or an error inside the block leaves `out` as it was (the sibling is removed, an
    `out` already moved aside is put back); on success the old `out`, if any, is deleted.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = (out.with_name(f".{out.name}.{os.getpid()}.{what}") for what in ("tmp", "old"))
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if out.exists():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training state (model and optimizer state dicts, step, RNG states, ...) atomically.

    Raises `TrainingError` on an OS error (a full disk, no permission), naming the file; the
    checkpoint that was there before is untouched.
    """
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a run killed mid-save
        stale.unlink(missing_ok=True)
    try:
        atomic_write(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as RuntimeError
        raise TrainingError(f"could not write the checkpoint {path} ({err}); the previous checkpoint "
                            "there is intact. Free some disk space (or fix the folder's permissions) "
                            "and resume with --resume") from err


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by `save_state`, safely (`weights_only=True`).

    A missing, truncated or corrupt file is a `TrainingError` that says so: never a silent
    restart from step 0.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"no checkpoint at {path}")
    try:
        if not zipfile.is_zipfile(path):
            raise RuntimeError("not a PyTorch zip archive")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise TrainingError(f"the checkpoint {path} is corrupt or truncated ({str(err).splitlines()[0]}); "
                            "it was not loaded. Restore it from a copy, or start a new run in another "
                            "folder") from err
    if not isinstance(state, dict) or not {"step", "model", "optimizer"} <= set(state):
        raise TrainingError(f"{path} is not a training checkpoint of this package (expected the keys "
                            "step, model and optimizer)")
    return state


class RunLock:
    """An exclusive lock on a run directory, held while the `with` block runs.

    A second process on the same directory gets a `TrainingError` at once. The kernel releases
    the lock when its holder exits or is killed, so no stale lock ever needs removing.
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            self.fd = None
            raise TrainingError(f"{self.path.parent} is in use by a running training (pid {holder}); "
                                "wait for it to finish, or use another --out folder") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
