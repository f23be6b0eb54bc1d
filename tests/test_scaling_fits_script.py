"""experiments/scaling_fits.py, run as the README says on a synthetic two-seed sweep drawn from a
KNOWN law (seconds: tiny bootstrap counts), and the committed experiments/results/scaling_fits.json
checked against the committed sweep it was made from."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "experiments" / "results" / "scaling_fits.json"
E, A, B, ALPHA, BETA = 1.8, 400.0, 2000.0, 0.34, 0.37
G = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
BUDGETS = (1e18, 1e19, 1e20, 1e21)
TRAIN_TOKENS = 3e9  # so that the smaller models at the larger budgets repeat the data


def synthetic_sweep(seed: int) -> list[dict]:
    """4 budgets x 7 sizes around the law's optimum, the loss times exp(0.002 normal)."""
    rng = np.random.default_rng(seed)
    records = []
    for c in BUDGETS:
        for k in range(-3, 4):
            n = G * (c / 6) ** (BETA / (ALPHA + BETA)) * 2.0**k
            d = c / (6 * n)
            loss = (E + A / n**ALPHA + B / d**BETA) * math.exp(0.002 * rng.standard_normal())
            records.append({"params": n, "tokens": d, "flops": 6 * n * d, "loss": loss, "budget": c,
                            "seed": seed, "epochs": d / TRAIN_TOKENS})
    return records


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.scaling_fits", *args], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, list[dict]]:
    tmp = tmp_path_factory.mktemp("fits")
    files, records = [], []
    for seed in (0, 1):
        records += synthetic_sweep(seed)
        files.append(tmp / f"seed{seed}.json")
        files[-1].write_text(json.dumps(synthetic_sweep(seed)))
    out = tmp / "fits.json"
    done = run_script("--runs", ",".join(map(str, files)), "--out", str(out), "--bootstrap", "6",
                      "--bootstrap3", "3", "--starts", "3", "--bootstrap-starts", "2", "--beyond", "1e23")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout
    return json.loads(out.read_text()), records


def test_the_fits_recover_the_law_the_sweep_was_drawn_from(smoke):
    doc, _ = smoke
    fit = doc["all"]
    assert fit["runs"] == 56 and doc["seeds"] == [0, 1]
    true_a = BETA / (ALPHA + BETA)
    assert fit["approach2"]["a"] == pytest.approx(true_a, abs=0.03)
    assert fit["approach3"]["a"] == pytest.approx(true_a, abs=0.03)
    assert fit["approach3"]["alpha"] == pytest.approx(ALPHA, rel=0.15)
    for c in ("1e+19", "1e+23"):  # in the sweep and far beyond it
        truth = G * (float(c) / 6) ** true_a
        assert fit["approach3"]["n_opt"][c] == pytest.approx(truth, rel=0.25)
        lo, hi = fit["approach2"]["intervals"][c]
        assert lo <= fit["approach2"]["n_opt"][c] * 1.5 and hi >= fit["approach2"]["n_opt"][c] / 1.5
    for approach in ("approach1", "approach2", "approach3"):
        lo, hi = fit[approach]["intervals"]["a"]
        assert lo <= hi and fit[approach]["intervals"]["skipped"] >= 0
    assert fit["approach3"]["resample_starts_max_rel_diff"] >= 0


def test_the_repetition_cut_and_the_seed_spread_follow_from_the_records(smoke):
    doc, records = smoke
    few = [r for r in records if r["epochs"] <= 4]
    assert 0 < len(few) < len(records) and doc["few_epochs"]["runs"] == len(few)
    # 1e21 keeps 1 size per seed below 4 epochs: no parabola there, but the other budgets fit
    assert doc["few_epochs"]["approach2"]["budgets_dropped"] == [1e21]
    assert [m["flops"] for m in doc["few_epochs"]["approach2"]["minima"]] == [1e18, 1e19, 1e20]
    spread = doc["seed_spread"]
    ranges = {}
    for r in records:
        ranges.setdefault((r["budget"], r["params"]), []).append(r["loss"])
    expected = [max(v) - min(v) for _, v in sorted(ranges.items())]
    assert [p["range"] for p in spread["pairs"]] == pytest.approx(expected)
    assert spread["mean"] == pytest.approx(np.mean(expected)) and spread["max"] == pytest.approx(max(expected))
    assert len(spread["near_minimum"]) == len(BUDGETS)
    for near in spread["near_minimum"]:  # the best two sizes (seed means), and chapter 8's rule
        runs = {n: v for (b, n), v in ranges.items() if b == near["budget"]}
        ranked = sorted(runs, key=lambda n: np.mean(runs[n]))
        assert [near["best"], near["runner_up"]] == ranked[:2]
        assert near["gap"] == pytest.approx(np.mean(runs[ranked[1]]) - np.mean(runs[ranked[0]]))
        noise = 2 * math.sqrt(sum(np.var(runs[n], ddof=1) / 2 for n in ranked[:2]))
        assert near["noise"] == pytest.approx(noise) and near["within_noise"] == (near["gap"] <= noise)


def test_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "few.json").write_text(json.dumps(synthetic_sweep(0)[:3]))
    done = run_script("--runs", str(tmp_path / "few.json"), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "at least 6 runs" in done.stderr
    assert not (tmp_path / "x.json").exists()
    bare = [{k: r[k] for k in ("params", "tokens", "flops", "loss", "budget")} for r in synthetic_sweep(0)]
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    done = run_script("--runs", str(tmp_path / "bare.json"), "--out", str(tmp_path / "x.json"))
    assert done.returncode != 0 and "no 'epochs'" in done.stderr


def test_a_fit_the_records_cannot_support_is_reported_and_the_others_still_run(tmp_path):
    two_sizes = [r for seed in (0, 1) for r in synthetic_sweep(seed) if r["params"] in
                 {x["params"] for x in synthetic_sweep(0)[2::7] + synthetic_sweep(0)[3::7]}]
    (tmp_path / "two.json").write_text(json.dumps(two_sizes))  # 2 sizes a budget: no parabola
    out = tmp_path / "fits.json"
    done = run_script("--runs", str(tmp_path / "two.json"), "--out", str(out), "--bootstrap", "3",
                      "--bootstrap3", "2", "--starts", "2", "--bootstrap-starts", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    fit = json.loads(out.read_text())["all"]
    assert "fewer than 2 budgets have runs of 3 sizes" in fit["approach2"]["error"]
    assert "error" not in fit["approach3"] and math.isfinite(fit["approach3"]["a"])
    assert "none (approach 2: fewer than 2 budgets" in done.stdout


def test_committed_fits_were_made_from_the_committed_sweep():
    if not COMMITTED.exists():
        pytest.skip(f"{COMMITTED} not generated yet")
    doc = json.loads(COMMITTED.read_text())
    assert doc["command"].startswith("python -m experiments.scaling_fits")
    for name, digest in doc["runs_sha256"].items():
        path = ROOT / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, (
            f"{name} changed since scaling_fits.json was made: rerun `{doc['command']}`")
    for approach in ("approach1", "approach2", "approach3"):
        assert all(math.isfinite(v) for v in doc["all"][approach]["n_opt"].values())
    assert COMMITTED.stat().st_size < 64_000
