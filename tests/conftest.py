"""Shared test setup: the data folder, and a report of how long each chapter took."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# `make test` sets LLAMA_DATA_DIR; plain `pytest` in a checkout with ../shared beside it works too.
if not os.environ.get("LLAMA_DATA_DIR") and SHARED_DATA.is_dir():
    os.environ["LLAMA_DATA_DIR"] = str(SHARED_DATA)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001 - pytest's hook signature
    from tools.notebooks import TIMINGS

    ours = {path: result for path, result in TIMINGS.items() if Path(path).resolve().is_relative_to(ROOT)}
    if not ours:
        return
    terminalreporter.section("notebook execution times (budget: most under 60 s, none over 180 s)")
    for path, result in ours.items():
        how = "cached" if result.cached else "executed"
        flag = "  OVER BUDGET" if result.seconds > 180 else ""
        terminalreporter.write_line(f"{result.seconds:7.1f} s  {how:8}  {Path(path).resolve().relative_to(ROOT)}{flag}")
