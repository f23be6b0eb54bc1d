"""What both experiment scripts share: the machine's description, the results file, thinned curves.

The results files are small JSON documents (schema: experiments/README.md) written atomically
(a temporary file, fsync, rename), so a script killed mid-write leaves the previous file whole.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, Any]:
    """The CPU, its core count, the torch threads used and the versions that produced a result."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def command_line(module: str) -> str:
    """How this process was started, as a command that reruns it from the repository root."""
    return " ".join(["python -m", module, *sys.argv[1:]])


def read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a reader (or a kill) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(dumps(data) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def dumps(data: dict[str, Any]) -> str:
    """Indented JSON with every curve (a list of short lists) on one line: small, readable diffs."""
    text = json.dumps(data, indent=1)
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    # and a list of such lists (a whole curve) on one line too
    return re.sub(r"\[\s+(\[[^\[\]{}]*\](?:,\s+\[[^\[\]{}]*\])*)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]", text)


def rounded(x: float | None, digits: int = 5) -> float | None:
    return None if x is None else round(float(x), digits)


def thin_curve(records: list[dict[str, Any]], every: int) -> list[list[Any]]:
    """`[[step, mean train loss over the steps since the previous point, val loss or None], ...]`
    at every `every`-th step, at every step with a validation loss, and at the last step."""
    points, window = [], []
    for i, r in enumerate(records):
        window.append(r["train_loss"])
        last = i == len(records) - 1
        if r["step"] % every == 0 or r.get("val_loss") is not None or last:
            points.append([r["step"], rounded(statistics.fmean(window), 4), rounded(r.get("val_loss"), 4)])
            window = []
    return points


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def copy_files(folder: Path, names: tuple[str, ...], dest: Path) -> None:
    """Replace `dest` by a folder holding `folder`'s files `names`, atomically
    (training.checkpoint.atomic_folder: a kill leaves the old `dest` whole)."""
    import shutil

    from llama_from_scratch.training.checkpoint import atomic_folder

    with atomic_folder(dest) as tmp:
        for name in names:
            shutil.copy2(folder / name, tmp / name)
