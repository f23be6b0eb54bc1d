"""benchmarks/training.py, scaled down to its tiny size, so CI runs every line of it.

The numbers it measures depend on the machine; what is checked is that both models start from
the same weights on the same batches (first-step loss and gradient norm agree), that every
variant is timed, and that the ratios and MFU in its JSON are the arithmetic they claim to be.
"""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from benchmark_scripts import load_benchmark


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_training_benchmark_runs_scaled_down(tmp_path, capsys, restore_threads):
    out = tmp_path / "training.json"
    script = load_benchmark("training")
    assert script.main(["--sizes", "tiny", "--steps", "1", "--repeats", "2", "--threads", "1",
                        "--compile-backend", "eager", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio ours / transformers" in printed and "MFU" in printed
    result = json.loads(out.read_text())
    assert result["env"]["threads"] == 1 and result["env"]["compile_backend"] == "eager"
    tiny = result["sizes"]["tiny"]
    config = tiny["config"]
    assert (config["dim"], config["n_layers"], config["n_kv_heads"], config["vocab_size"]) == (64, 2, 4, 4096)
    first = tiny["first_step"]
    # Same weights, same batch, same loss code: the two models agree to float32 rounding.
    assert first["ours"]["train_loss"] == pytest.approx(first["transformers"]["train_loss"], rel=1e-5)
    assert first["ours"]["grad_norm"] == pytest.approx(first["transformers"]["grad_norm"], rel=1e-4)
    assert abs(first["ours"]["train_loss"] - 8.318) < 0.1  # ln(4096): an untrained model
    assert tiny["failures"] == {}
    variants = tiny["variants"]
    assert set(variants) == {"ours", "transformers", "ours_compiled", "transformers_compiled"}
    tokens_per_round = config["batch_size"] * config["seq_len"]
    peak = result["env"]["peak_flops"]
    for v in variants.values():
        assert len(v["runs_s"]) == 2 and v["first_round_s"] > 0
        assert v["tokens_per_s"] == pytest.approx(statistics.median(tokens_per_round / s for s in v["runs_s"]))
        assert v["mfu_full"] == pytest.approx(v["tokens_per_s"] * tiny["flops_per_token"]["train_full"] / peak)
        assert v["mfu_causal"] < v["mfu_full"]  # the causal count is smaller
    ours, theirs = variants["ours"], variants["transformers"]
    assert tiny["ratio"] == pytest.approx(ours["tokens_per_s"] / theirs["tokens_per_s"])
    assert tiny["ratio_best"] == pytest.approx(min(theirs["runs_s"]) / min(ours["runs_s"]))
    paired = statistics.median(t / o for o, t in zip(ours["runs_s"], theirs["runs_s"]))
    assert tiny["ratio_paired"] == pytest.approx(paired)
    assert "compile_s" in variants["ours_compiled"] and "speedup_over_eager" in variants["transformers_compiled"]
