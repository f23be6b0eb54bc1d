"""The ablation's results file, shared by any number of processes: locks, keys, reading, recording.

A run is identified by (phase, variant, seed, lr); phase "lr_sweep" or "ablation". The file is
read and rewritten whole (experiments.common.write_json, atomic) under an flock, so two
processes adding runs at once lose neither; a process killed while holding a lock releases it.
"""

from __future__ import annotations

import fcntl
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from experiments.ablation_stats import comparisons, summarize
from experiments.common import command_line, machine, now, read_json, write_json

MODULE = "experiments.pretraining_ablations"


@contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[bool]:
    """An flock on `path` (released when the process dies); yields False if busy and not waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_key(r: dict[str, Any]) -> tuple:
    return (r["phase"], r["variant"], r["seed"], r["lr"])


def open_results(out: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The results so far, if made with this config; a fresh document if there are none."""
    results = read_json(out)
    if results is None:
        return {"command": command_line(MODULE), "created": now(), "machine": machine(), "config": config,
                "lr": None, "lr_sweep": [], "runs": [], "summary": [], "comparisons": []}
    if results["config"] != config:
        saved = results["config"]
        changed = [k for k in sorted(set(config) | set(saved)) if config.get(k) != saved.get(k)]
        sys.exit(f"error: {out} holds results of a different setup (differing: {', '.join(changed)}); "
                 "delete it or pass another --out")
    return results


def record(out: Path, lock: Path, run: dict[str, Any], config: dict[str, Any],
           lr: float | None) -> dict[str, Any]:
    """Add one finished run to the results file (read, add, recompute the summary, write);
    `lr` is the ablation's learning rate (None during the sweep)."""
    with locked(lock):
        results = open_results(out, config)
        phase = "lr_sweep" if run["phase"] == "lr_sweep" else "runs"
        results[phase] = [r for r in results[phase] if run_key(r) != run_key(run)] + [run]
        if lr is not None:
            results["lr"] = lr
            results["command"] = command_line(MODULE)
        chosen = [r for r in results["runs"] if r["lr"] == results["lr"]]
        results["summary"], results["comparisons"] = summarize(chosen), comparisons(chosen)
        results["updated"] = now()
        write_json(out, results)
    return results
