"""The IsoFLOP plan, the sweep runner and the `scaling` command line.

The sweep is checked against chapter 8's `train` command (the same run, bit for bit), a killed
sweep against one never stopped, and the CLI's contract (one JSON line, exit 2 for bad input).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.cli.main import main
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.scaling.corpus import stdlib_sources, write_stdlib_corpus
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.grid import (BATCH_SIZE, LADDER, MIN_STEPS, SEQ_LEN, non_embedding_params,
                                             parse_budgets, plan, rung_args)
from llama_from_scratch.scaling.laws import CHINCHILLA, EPOCH, compute_optimal
from llama_from_scratch.scaling.sweep import run_sweep

BUDGET = 2.5e10  # three runs of about 120, 80 and 40 steps: seconds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    text = datafiles.path("tinyshakespeare.txt").read_text(encoding="utf-8")[:200_000]
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def swept(corpus, tmp_path_factory):
    torch.set_num_threads(1)  # the bit-exact comparisons below need one thread count throughout
    out = tmp_path_factory.mktemp("sweep")
    return out, run_sweep(corpus, out, (BUDGET,), progress=False)


def test_plan_spends_each_budget_on_consecutive_rungs():
    budgets = (1e11, 3e11, 1e12, 3e12, 1e13)
    runs = plan(budgets)
    for budget in budgets:
        mine = [r for r in runs if r.budget == budget]
        assert len(mine) >= 3 and all(r.steps >= MIN_STEPS for r in mine)
        for r in mine:  # whole steps: within half a step of the budget
            assert abs(r.flops - budget) <= 0.5 * 6 * r.params * BATCH_SIZE * SEQ_LEN
            assert r.flops == 6 * r.params * r.steps * BATCH_SIZE * SEQ_LEN
        rungs = [LADDER.index((r.args.dim, r.args.n_layers, r.args.n_heads, r.args.n_kv_heads)) for r in mine]
        assert rungs == list(range(rungs[0], rungs[0] + len(rungs)))
        guess = math.sqrt(budget / 120)  # Chinchilla's 20 tokens a parameter lies inside the window
        assert mine[0].params <= guess * 1.5 and mine[-1].params >= guess
    assert [r.budget for r in runs] == sorted(r.budget for r in runs)  # cheapest first


def test_params_are_the_models_non_embedding_weights():
    for rung in LADDER:
        model = Transformer(rung_args(rung))
        counted = sum(p.numel() for name, p in model.named_parameters() if name != "tok_embeddings.weight")
        assert non_embedding_params(rung_args(rung)) == counted


@pytest.mark.parametrize("text, message", [("1e11,x", "comma-separated"), ("-1", "positive"),
                                           ("1e11,1e11", "twice"), ("", "positive")])
def test_bad_budgets(text, message):
    with pytest.raises(ScalingError, match=message):
        parse_budgets(text)


def test_a_budget_too_small_for_the_grid():
    with pytest.raises(ScalingError, match="too small for this grid.*at least about"):
        plan([1e9])


def test_records_follow_their_definitions(swept):
    out, records = swept
    assert [r["budget"] for r in records] == [BUDGET] * 3
    identity = json.loads((out / "sweep.json").read_text())
    for r in records:
        assert r["flops"] == 6 * r["params"] * r["tokens"] and r["tokens"] == r["steps"] * BATCH_SIZE * SEQ_LEN
        assert r["epochs"] == round(r["tokens"] / identity["train_tokens"], 3)
        assert r["curve"][-1] == [r["tokens"], r["loss"]]
        every = r["steps"] // 8 * BATCH_SIZE * SEQ_LEN  # tokens between two points of the curve
        assert [t for t, _ in r["curve"]] == [*range(every, r["tokens"], every), r["tokens"]]
        assert r["flops_exact"] > r["flops"]  # attention over the context, on top of 6N
        assert 0 < r["loss"] < math.log(512)  # better than a uniform guess over the vocabulary
    assert json.loads((out / "runs.json").read_text()) == records


def test_a_sweep_run_is_the_train_command_bit_for_bit(swept, corpus, tmp_path, capsys):
    out, records = swept
    r = records[1]
    m = r["model"]
    args = ["train", "--data", str(corpus), "--out", str(tmp_path / "run"), "--tokenizer", str(out / "tokenizer.model"),
            "--preset", "tiny", "--dim", str(m["dim"]), "--n-layers", str(m["n_layers"]), "--n-heads", str(m["n_heads"]),
            "--n-kv-heads", str(m["n_kv_heads"]), "--seq-len", str(SEQ_LEN), "--batch-size", str(BATCH_SIZE),
            "--max-steps", str(r["steps"]), "--lr", str(r["lr"]), "--warmup-steps", str(max(1, r["steps"] // 10)),
            "--eval-every", str(r["steps"]), "--seed", str(r["seed"])]
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out)
    assert round(trained["val_loss"], 5) == r["loss"]


def test_a_killed_sweep_resumes_to_the_same_records(swept, corpus, tmp_path):
    _, records = swept

    def kill(record):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(corpus, tmp_path, (BUDGET,), progress=False, on_record=kill)
    assert len(json.loads((tmp_path / "runs.json").read_text())) == 1
    with pytest.raises(ScalingError, match="--resume"):
        run_sweep(corpus, tmp_path, (BUDGET,), progress=False)
    with pytest.raises(ScalingError, match="different sweep.*budgets"):
        run_sweep(corpus, tmp_path, (BUDGET, 3e10), resume=True, progress=False)
    resumed = run_sweep(corpus, tmp_path, (BUDGET,), resume=True, progress=False)
    drop = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert drop(resumed) == drop(records)


def cli(capsys, *argv):
    code = main(["scaling", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("law", [CHINCHILLA, EPOCH])
def test_optimum_prints_the_laws_minimum(capsys, law):
    code, out, _ = cli(capsys, "optimum", "--flops", "5.76e23", "--law", law.name)
    assert code == 0 and len(out.splitlines()) == 1
    result = json.loads(out)
    assert math.isclose(6 * result["params"] * result["tokens"], 5.76e23, rel_tol=1e-9)
    assert math.isclose(result["loss"], law.loss(result["params"], result["tokens"]), rel_tol=1e-12)
    for scale in (0.9, 1.1):  # a minimum along C = 6 N D
        n = result["params"] * scale
        assert law.loss(n, 5.76e23 / (6 * n)) > result["loss"]
    if law is CHINCHILLA:  # the numbers: about 32B parameters and 3.0T tokens
        assert round(result["params"] / 1e9) == 32 and round(result["tokens"] / 1e12, 1) == 3.0


def synthetic_runs(path, law=CHINCHILLA, n_budgets=4):
    """IsoFLOP runs of a known law, 8 sizes a budget at fixed ratios to its optimum (so a
    parabola's small bias is the same at every budget and the slope a is exact)."""
    records = []
    for budget in [1e18 * 4**i for i in range(n_budgets)]:
        for n in [compute_optimal(law, budget)[0] * 2 ** (j - 3.5) for j in range(8)]:
            d = budget / (6 * n)
            records.append({"params": n, "tokens": d, "flops": budget, "loss": float(law.loss(n, d))})
    path.write_text(json.dumps(records))
    return path


def test_fit_recovers_a_known_law_from_a_file(capsys, tmp_path):
    runs = synthetic_runs(tmp_path / "runs.json")
    code, out, _ = cli(capsys, "fit", "--runs", str(runs), "--approach", "3")
    fitted = json.loads(out)
    assert code == 0 and set(fitted) == {"E", "A", "B", "alpha", "beta"}
    assert abs(fitted["alpha"] - CHINCHILLA.alpha) < 0.02 and abs(fitted["beta"] - CHINCHILLA.beta) < 0.02
    code, out, _ = cli(capsys, "fit", "--runs", str(runs), "--approach", "2")
    fitted = json.loads(out)
    a = CHINCHILLA.beta / (CHINCHILLA.alpha + CHINCHILLA.beta)
    assert code == 0 and set(fitted) == {"a", "b"} and abs(fitted["a"] - a) < 1e-6
    assert abs(fitted["a"] + fitted["b"] - 1) < 1e-6  # N D = C / 6 at every minimum


def test_fit_with_bootstrap_adds_intervals(capsys, tmp_path):
    runs = synthetic_runs(tmp_path / "runs.json")
    code, out, _ = cli(capsys, "fit", "--runs", str(runs), "--approach", "2", "--bootstrap", "20")
    fitted = json.loads(out)
    assert code == 0 and fitted["bootstrap"] == 20 and 0 <= fitted["skipped"] < 5
    for key in ("a", "b"):
        lo, hi = fitted["intervals"][key]
        assert lo <= fitted[key] <= hi


@pytest.mark.parametrize("records, message", [
    ([{"params": 1e6, "tokens": 1e8, "flops": 6e14, "loss": 3.0}] * 3, "at least"),
    ([{"params": 1e6, "tokens": 1e8, "flops": 6e14, "loss": -3.0}] * 10, "loss"),
    ([{"params": 0, "tokens": 1e8, "flops": 6e14, "loss": 3.0}] * 10, "params"),
    ([{"tokens": 1e8, "flops": 6e14, "loss": 3.0}] * 10, "params"),
])
def test_fit_bad_records_exit_2(capsys, tmp_path, records, message):
    path = tmp_path / "runs.json"
    path.write_text(json.dumps(records))
    code, out, err = cli(capsys, "fit", "--runs", str(path), "--approach", "3")
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["optimum", "--flops", "-1"], "FLOPs"),
    (["sweep", "--data", "/nonexistent.txt", "--out", "{tmp}/s"], "no such file"),
    (["sweep", "--data", "{corpus}", "--out", "{tmp}/s", "--budgets", "1e9"], "too small"),
    (["fit", "--runs", "/nonexistent.json"], "nonexistent.json"),
])
def test_cli_bad_input_exits_2(capsys, tmp_path, corpus, argv, message):
    argv = [a.format(tmp=tmp_path, corpus=corpus) for a in argv]
    code, out, err = cli(capsys, *argv)
    assert code == 2 and out == "" and message in err


def test_the_stdlib_corpus_skips_tests_and_packages_and_names_each_file(tmp_path):
    root = tmp_path / "lib"
    for name, text in {"a.py": "x = 1\n", "pkg/b.py": "y = 2\n\n\n", "test/t.py": "no", "pkg/tests/t.py": "no",
                       "site-packages/s.py": "no", "notes.txt": "no"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "latin.py").write_bytes(b"caf\xe9 = 1\n")  # not UTF-8: skipped
    info = write_stdlib_corpus(tmp_path / "corpus.txt", root)
    assert (tmp_path / "corpus.txt").read_text() == "# file: a.py\nx = 1\n\n# file: pkg/b.py\ny = 2\n\n"
    assert info["files"] == 2 and info["bytes"] == (tmp_path / "corpus.txt").stat().st_size
    with pytest.raises(ScalingError, match="no .py files"):
        (tmp_path / "only_tests" / "tests").mkdir(parents=True)
        (tmp_path / "only_tests" / "tests" / "t.py").write_text("x = 1\n")
        stdlib_sources(tmp_path / "only_tests")
