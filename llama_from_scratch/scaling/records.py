"""Sweep records: reading `runs.json` and checking it before any fit.

A record is one training run: `{"params": N, "tokens": D, "flops": C, "loss": L, ...}` with
N = non-embedding parameters (all but the token-embedding table), D = training tokens,
C = 6 N D FLOPs and L = final validation loss in nats per token. Optional keys used by the fits:
`"budget"` (the nominal IsoFLOP budget the run belongs to; C is within a few percent of it since
steps are whole) and `"curve"` (`[[tokens_seen, val_loss], ...]`, the last point the final one).
Runs with the same (N, D) from different seeds are all kept: the fits use every record.

Chapter: scaling_laws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from llama_from_scratch.scaling.errors import ScalingError

FIELDS = ("params", "tokens", "flops", "loss")


def load_runs(path: str | Path) -> list[dict]:
    """The records in the JSON file `path`: a list of records, or `{"runs": [...]}`. Not checked
    here (call `check_records`); a missing file or a different shape raises ScalingError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ScalingError(f"no runs file at {path}: run `scaling sweep --out DIR` first, then pass "
                           f"DIR/runs.json") from None
    except json.JSONDecodeError as error:
        raise ScalingError(f"{path} is not valid JSON ({error})") from None
    if isinstance(data, dict) and "runs" in data:
        data = data["runs"]
    if not isinstance(data, list):
        raise ScalingError(f"{path} holds a {type(data).__name__}: expected a JSON list of records "
                           f'{{"params", "tokens", "flops", "loss"}} or {{"runs": [...]}}')
    return data


def _positive(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value > 0)


def check_records(records: Sequence[dict], need: int, what: str) -> None:
    """Raise ScalingError unless every record has params/tokens/flops/loss as positive finite numbers
    (the message names the record's index and the field) and there are at least `need` records.
    `what` names the fit for the message, e.g. "approach 3 (5 numbers: E, A, B, alpha, beta)"."""
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)):
        raise ScalingError(f"{what}: expected a list of run records, got {type(records).__name__}")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise ScalingError(f"run {index} is a {type(record).__name__}, not a record "
                               f'{{"params", "tokens", "flops", "loss"}}')
        for field in FIELDS:
            if field not in record:
                raise ScalingError(f'run {index} has no "{field}": every record needs '
                                   f"{', '.join(FIELDS)}")
            if not _positive(record[field]):
                raise ScalingError(f'run {index} has "{field}" = {record[field]!r}: it must be a '
                                   f"positive finite number (a diverged run or a bad record? drop it)")
    if len(records) < need:
        raise ScalingError(f"{what} needs at least {need} runs, got {len(records)}: add runs to the "
                           f"sweep (more model sizes or budgets)")


def group_by_budget(records: Sequence[dict], gap: float = 1.25) -> dict[float, list[dict]]:
    """Records grouped by IsoFLOP budget, budgets in increasing order. A record's `"budget"` is its
    key when present. The others are clustered by FLOPs: sorted, a new group starts where a run
    has more than `gap` times the previous run's FLOPs, and the group's key is its geometric-mean
    FLOPs (runs of one budget differ by a few percent since steps are whole, so rounding could cut
    a budget in two). Not handled: budgets closer than `gap` apart without a "budget" key (merged)."""
    groups: dict[float, list[dict]] = {}
    loose = []
    for index, record in enumerate(records):
        if "budget" not in record:
            loose.append(record)
        elif _positive(record["budget"]):
            groups.setdefault(float(record["budget"]), []).append(record)
        else:
            raise ScalingError(f'run {index} has "budget" = {record["budget"]!r}: it must be a '
                               f"positive number")
    clusters: list[list[dict]] = []
    for record in sorted(loose, key=lambda r: r["flops"]):
        if clusters and record["flops"] <= gap * clusters[-1][-1]["flops"]:
            clusters[-1].append(record)
        else:
            clusters.append([record])
    for cluster in clusters:
        key = float(math.exp(sum(math.log(r["flops"]) for r in cluster) / len(cluster)))
        groups.setdefault(key, []).extend(cluster)
    return dict(sorted(groups.items()))
