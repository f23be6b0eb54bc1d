"""benchmarks/scale_out.py at its tiny size, so CI runs every line of it: one process, DDP and FSDP
on 2 gloo ranks start from the same weights on the same global batch (equal first losses), and a
DDP rank sends the ring all-reduce's bytes per step (the kernel's count, headers aside)."""

from __future__ import annotations

import json

import pytest

from benchmark_scripts import load_benchmark
from llama_from_scratch.distributed import cost_model


def test_scale_out_benchmark_runs_scaled_down(tmp_path, capsys):
    out = tmp_path / "scale_out.json"
    script = load_benchmark("scale_out")
    assert script.main(["--size", "tiny", "--steps", "1", "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "tokens/s" in printed
    result = json.loads(out.read_text())
    runs = result["results"]
    assert set(runs) == {"single", "ddp", "fsdp"} and result["ranks"] == 2
    for variant in ("ddp", "fsdp"):
        assert runs[variant]["first_loss"] == pytest.approx(runs["single"]["first_loss"], rel=1e-6)
        assert runs[variant]["step_s"] > 0
    ddp = cost_model.ddp_step_bytes(runs["single"]["n_params"], 2)
    assert 1.0 <= runs["ddp"]["sent_per_step"] / ddp < 1.01
