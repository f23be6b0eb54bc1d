"""The experiment scripts (experiments/), run at a tiny scale: the JSON they commit has the documented
schema and finite values, a second run skips what is done, and the statistics agree with the runs.

Each script runs as the README says (`python -m experiments.<name>`), in a subprocess, on the
first 30,000 characters of tinyshakespeare; seconds, not minutes. The full-size results are
experiments/results/*.json; their schema is checked here too when they exist.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
TINY_MODEL = ["--dim", "16", "--n-heads", "2", "--n-kv-heads", "1", "--seq-len", "16", "--batch-size", "4",
              "--vocab-size", "400"]


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    from llama_from_scratch import datafiles

    path = tmp_path_factory.mktemp("text") / "shakespeare_head.txt"
    path.write_text(datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return path


def script(name: str, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([sys.executable, "-m", f"experiments.{name}", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_run(run: dict) -> None:
    for key in ("params_non_embedding", "params_total", "tokens", "val_loss", "val_bits_per_byte", "seconds"):
        assert finite(run[key]), (key, run[key])
    assert run["val_bits_per_byte"] > 0 and run["val_loss"] > 0
    steps = [p[0] for p in run["curve"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    for step, train_loss, val_loss in run["curve"]:
        assert finite(step) and finite(train_loss) and (val_loss is None or finite(val_loss))


def check_document(doc: dict) -> None:
    for key in ("command", "created", "machine", "config", "runs"):
        assert key in doc, key
    assert doc["command"].startswith("python -m experiments.")
    assert {"threads", "torch", "cores"} <= set(doc["machine"])
    for run in doc["runs"]:
        check_run(run)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory, text) -> tuple[list[str], Path, dict, Path]:
    tmp = tmp_path_factory.mktemp("ablation")
    out = tmp / "ablations.json"
    args = ["--data", str(text), "--work", str(tmp / "work"), "--out", str(out), *TINY_MODEL,
            "--steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--eval-batches", "1",
            "--seeds", "0,1", "--variants", "llama,gpt2,llama_mha", "--lr-sweep", "1e-3,3e-3"]
    done = script("pretraining_ablations", *args, cache=tmp / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    for run in doc["runs"]:  # the last point of an ablation curve is its final, whole-split loss
        assert run["curve"][-1][2] == pytest.approx(run["val_loss"], abs=1e-4)
    return args, out, doc, tmp


def test_ablation_results_have_the_schema_and_finite_values(ablation):
    _, _, doc, _ = ablation
    check_document(doc)
    assert [(r["variant"], r["seed"]) for r in doc["runs"]] == [
        (v, s) for v in ("llama", "gpt2", "llama_mha") for s in (0, 1)]
    assert {r["lr"] for r in doc["lr_sweep"]} == {1e-3, 3e-3}
    best = min(doc["lr_sweep"], key=lambda r: r["val_loss"])
    assert doc["lr"] == best["lr"] and all(r["lr"] == best["lr"] for r in doc["runs"])
    copied = [r for r in doc["runs"] if r.get("copied_from") == "lr_sweep"]
    assert [(r["variant"], r["seed"], r["val_loss"]) for r in copied] == [("llama", 0, best["val_loss"])]
    assert {r["tokens"] for r in doc["runs"]} == {4 * 4 * 16}  # equal tokens: steps * batch * seq


def test_ablation_variants_have_equal_non_embedding_parameters(ablation):
    _, _, doc, _ = ablation
    model, variants = doc["config"]["model"], doc["config"]["variants"]
    reference = variants["llama"]["non_embedding"]
    # Matching is exact to one MLP hidden unit: n_layers * 3 matrices * (dim + a bias) parameters.
    one_unit = model["n_layers"] * 3 * (model["dim"] + 1)
    for name, v in variants.items():
        assert abs(v["non_embedding"] - reference) <= one_unit, name
    for run in doc["runs"]:
        assert run["params_non_embedding"] == variants[run["variant"]]["non_embedding"]
    assert variants["gpt2"]["hidden_dim"] != variants["llama"]["hidden_dim"]  # it was resized
    assert variants["llama_mha"]["n_kv_heads"] == model["n_heads"] != variants["llama"]["n_kv_heads"]


def test_ablation_summary_and_verdicts_follow_from_the_runs(ablation):
    _, _, doc, _ = ablation
    values = {}
    for r in doc["runs"]:
        values.setdefault(r["variant"], []).append(r["val_bits_per_byte"])
    for row in doc["summary"]:
        v = values[row["variant"]]
        assert row["n"] == len(v) == 2
        assert row["mean"] == pytest.approx(statistics.fmean(v), abs=1e-5)
        assert row["std"] == pytest.approx(statistics.stdev(v), abs=1e-5)
    assert [(c["variant"], c["baseline"]) for c in doc["comparisons"]] == [("gpt2", "llama"), ("llama_mha", "llama")]
    for c in doc["comparisons"]:
        a, b = values[c["variant"]], values[c["baseline"]]
        assert c["diff"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b), abs=1e-5)
        noise = 2 * math.sqrt(statistics.variance(a) / 2 + statistics.variance(b) / 2)
        assert c["noise"] == pytest.approx(noise, abs=1e-5)
        expected = "within noise" if abs(c["diff"]) <= c["noise"] else ("worse" if c["diff"] > 0 else "better")
        assert c["verdict"] == expected


def test_ablation_rerun_skips_finished_runs_and_refuses_another_setup(ablation):
    args, out, doc, tmp = ablation
    again = script("pretraining_ablations", *args, cache=tmp / "cache")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.read_text())["runs"] == doc["runs"]  # nothing retrained (times would differ)
    other = script("pretraining_ablations", *[a if a != "4" else "5" for a in args], cache=tmp / "cache")
    assert other.returncode != 0 and "different setup" in other.stderr and "train" in other.stderr


def test_long_run_results_have_the_schema_samples_and_resume(tmp_path, text):
    out = tmp_path / "long.json"
    args = ["--data", str(text), "--work", str(tmp_path / "run"), "--out", str(out), *TINY_MODEL,
            "--steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--eval-batches", "1",
            "--save-every", "2", "--sample-tokens", "12", "--curve-every", "1"]
    done = script("pretraining_long_run", *args, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    check_document(doc)
    (run,) = doc["runs"]
    assert run["steps"] == 4 and run["tokens"] == 4 * 4 * 16
    assert [p[0] for p in run["curve"]] == [1, 2, 3, 4] and run["curve"][1][2] is not None
    assert doc["train_command"].startswith("python -m llama_from_scratch train ")
    for name in ("greedy", "temperature_0.8"):
        assert doc["samples"][name].startswith(doc["samples"]["prompt"])
    # A second call finds the finished run (train --resume) and reports the same numbers.
    again = script("pretraining_long_run", *args, cache=tmp_path / "cache")
    assert again.returncode == 0, again.stderr[-3000:]
    redo = json.loads(out.read_text())
    assert redo["runs"][0]["val_loss"] == run["val_loss"] and redo["samples"] == doc["samples"]


@pytest.mark.parametrize("name", ["pretraining_ablations", "pretraining_long_run"])
def test_committed_results_have_the_schema(name):
    path = RESULTS / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path} not generated yet")
    doc = json.loads(path.read_text())
    check_document(doc)
    assert path.stat().st_size < 64_000  # small: numbers and thinned curves, no weights


def test_alignment_scripts_run_small_and_merge_their_runs(tmp_path):
    """experiments.alignment_sft then alignment_reward, tiny: the README's smoke tests."""
    out, policy = tmp_path / "sft.json", tmp_path / "policy"
    common = ["--steps", "2", "--stories", "64", "--per-topic", "1", "--out", str(out), "--work", str(tmp_path / "w")]
    done = script("alignment_sft", "--seeds", "0", "--policy-out", str(policy), *common, cache=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    done = script("alignment_sft", "--seeds", "1", "--policy-out", "", *common, cache=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [r["seed"] for r in doc["runs"]] == [0, 1] and doc["base"]["answers"] == 8
    assert sorted(p.name for p in policy.iterdir()) == ["checkpoint.pt", "metrics.jsonl", "run.json", "sft.json"]
    for run in doc["runs"]:
        assert math.isclose(run["topic_ratio"], run["heldout"]["topic"] / doc["base"]["topic"])
    assert len(doc["samples"]) == 8 and doc["samples"][0]["topic"] == doc["heldout_topics"][0]
    other = script("alignment_sft", "--seeds", "2", "--policy-out", "", *common[:-4], "--out", str(out), "--work",
                   str(tmp_path / "w"), "--per-topic", "2", cache=tmp_path)
    assert other.returncode != 0 and "another setup" in other.stderr

    reward = tmp_path / "reward.json"
    args = ["--pairs", "16", "--heldout-pairs", "8", "--policy", str(policy), "--out", str(reward), "--work",
            str(tmp_path / "r"), "--model-out", str(tmp_path / "rm")]
    for runs in ("small:1", "none:1"):
        done = script("alignment_reward", "--runs", runs, *args, cache=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads(reward.read_text())
    assert [(r["margin"], r["seed"], r["pairs"]) for r in doc["runs"]] == [("none", 1, 16), ("small", 1, 16)]
    for run in doc["runs"]:
        assert 0 <= run["metrics"]["accuracy"] <= 1 and run["counts"]["heldout"]["requested"] == 8
    assert not (tmp_path / "rm").exists()  # only the 8,192-pair default run is kept as the chapter's model

    rlhf, folder = tmp_path / "rlhf.json", tmp_path / "r" / "small_seed1_pairs16_lr0.001"
    args = ["--steps", "1", "--per-topic", "1", "--policy", str(policy), "--reward", str(folder), "--pairs",
            str(folder / "pairs.jsonl"), "--out", str(rlhf), "--work", str(tmp_path / "rl")]
    done = script("alignment_rlhf", "--runs", "dpo:0.5:1,ppo:0.1:1", *args, cache=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.loads(rlhf.read_text())["runs"]
    assert [(r["method"], r["setting"]) for r in runs] == [("dpo", "0.5"), ("ppo", "0.1")]
    for run in runs:
        assert run["heldout"]["answers"] == 8 and run["heldout"]["kl"] >= 0 and len(run["samples"]) == 4
    assert runs[1]["records"][0]["kl"] == 0  # PPO's first batch is the SFT model's own
