"""benchmarks/gpu_7b.py, scaled down to a tiny model on the CPU, so CI runs every line of it.

On the device it runs at 7B's shape in float16; here the same stages must write their JSON
results with bit-identical round trips, logits within the stated tolerance, and the
compiled model generating the same tokens as the eager one.
"""

from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def test_gpu_script_runs_scaled_down_on_the_cpu(tmp_path):
    out = tmp_path / "results"
    script = load_benchmark("gpu_7b")
    assert script.main(["--out", str(out), "--preset", "tiny", "--device", "cpu", "--dtype", "float32",
                        "--compile-backend", "eager", "--tokens", "6", "--runs", "1", "--copy-gib", "0.001",
                        "--workdir", str(tmp_path)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01_env.json", "02_build.json", "03_meta.json", "04_hf.json", "05_logits.json",
                     "06_bandwidth.json", "07_decode.json"]
    r = {p.stem.split("_", 1)[1]: json.loads(p.read_text()) for p in out.iterdir()}
    assert r["meta"]["bit_identical"] and r["meta"]["files"] == ["consolidated.00.pth", "consolidated.01.pth",
                                                                 "params.json"]
    assert r["hf"]["bit_identical"] and "config.json" in r["hf"]["files"]
    assert r["logits"]["pass"] and r["logits"]["max_abs_diff"] < 1e-5  # float32 here
    assert r["logits"]["argmax_agreement"] == 1.0
    assert r["bandwidth"]["bound_tokens_per_s"] > 0
    decode = r["decode"]
    assert decode["compiled_same_tokens_as_eager"]
    for key in ("ours_eager", "ours_compiled", "transformers_generate"):
        assert decode[key]["tokens_per_s"] > 0 and len(decode[key]["runs_s"]) == 1
    assert not any(p.name.startswith("gpu_7b_") for p in tmp_path.iterdir())  # scratch checkpoints deleted
