"""Mean +- std over seeds per ablation variant, and whether a difference exceeds the seed noise.

The rule (stated in experiments/README.md): a variant differs from its baseline when the gap
between the two means of validation bits per byte is larger than two standard errors of that
gap, `2 * sqrt(std_a^2 / n_a + std_b^2 / n_b)` (std over seeds, n-1 in the denominator);
otherwise it is "within noise". With 3 seeds this is a rough screen, not a significance test.
The paired differences (same seed: same batches, same order) are reported beside it.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

# (variant, baseline): the comparisons the chapter reports.
COMPARISONS = [("gpt2", "llama"), ("llama+layernorm", "llama"), ("llama+learned_pos", "llama"),
               ("llama+gelu", "llama"), ("llama+bias", "llama"), ("llama_mha", "llama")]
METRIC = "val_bits_per_byte"


def _values(runs: list[dict[str, Any]], variant: str) -> dict[int, float]:
    return {r["seed"]: r[METRIC] for r in runs if r["variant"] == variant and r.get(METRIC) is not None}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """[{"variant", "mean", "std", "n", "min", "max", "failed"}] of validation bits per byte."""
    out = []
    for variant in dict.fromkeys(r["variant"] for r in runs):
        values = list(_values(runs, variant).values())
        failed = sum(1 for r in runs if r["variant"] == variant and r.get(METRIC) is None)
        if not values:
            out.append({"variant": variant, "mean": None, "std": None, "n": 0, "min": None, "max": None,
                        "failed": failed})
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append({"variant": variant, "mean": round(statistics.fmean(values), 5), "std": round(std, 5),
                    "n": len(values), "min": round(min(values), 5), "max": round(max(values), 5),
                    "failed": failed})
    return out


def compare(runs: list[dict[str, Any]], variant: str, baseline: str) -> dict[str, Any] | None:
    """The gap `variant - baseline` in bits per byte (> 0: the variant is worse) and its verdict."""
    a, b = _values(runs, variant), _values(runs, baseline)
    if not a or not b:
        return None
    std_a = statistics.stdev(a.values()) if len(a) > 1 else 0.0
    std_b = statistics.stdev(b.values()) if len(b) > 1 else 0.0
    diff = statistics.fmean(a.values()) - statistics.fmean(b.values())
    noise = 2 * math.sqrt(std_a ** 2 / len(a) + std_b ** 2 / len(b))
    if len(a) < 2 or len(b) < 2:
        verdict = "too few seeds"
    elif abs(diff) <= noise:
        verdict = "within noise"
    else:
        verdict = "worse" if diff > 0 else "better"
    paired = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    return {"variant": variant, "baseline": baseline, "diff": round(diff, 5), "noise": round(noise, 5),
            "verdict": verdict, "paired_mean": round(statistics.fmean(paired), 5) if paired else None,
            "paired_std": round(statistics.stdev(paired), 5) if len(paired) > 1 else None,
            "n_paired": len(paired)}


def comparisons(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for v, b in COMPARISONS if (c := compare(runs, v, b)) is not None]
