"""Measure a load's peak resident memory honestly: in a fresh process, every weight touched.

`measure(method, path)` runs `python -m llama_from_scratch.checkpoints.memory_probe METHOD PATH [DTYPE]`
in a new process, which imports everything first, takes its resident set size (RSS) as
the baseline, resets the kernel's peak counter, loads, reads every weight once (so
memory-mapped pages are really brought in and counted), and reports the peak RSS above
the baseline. RSS counts a memory-mapped file's pages once they are read, so the
mapping is not a way to hide memory. Methods:

    ours    `load_model(path, dtype=DTYPE)`: meta device, memory-mapped, assigned
    naive   `Transformer(args)` (random float32 weights), then
            `load_state_dict(torch.load(file))` without memory-mapping (Meta's format)

Linux only (it reads /proc/self/status).

Chapter: real_weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def rss_kib(field: str = "VmRSS") -> int:
    """VmRSS (now), VmHWM (peak) or RssFile (file-backed part, now) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _probe(method: str, path: str, dtype: str | None) -> dict:
    import safetensors.torch  # noqa: F401 - every import before the baseline, so none counts as loading
    import torch
    import tqdm.auto  # noqa: F401

    from llama_from_scratch.checkpoints import hf_reader, meta_format  # noqa: F401
    from llama_from_scratch.checkpoints.load import load_model, read_args
    from llama_from_scratch.model.parameters import empty_model
    from llama_from_scratch.model.transformer import Transformer

    args = read_args(path)  # reads only headers; done before the baseline like the imports
    empty_model(args)  # the first meta-device model imports torch._dynamo (~100 MB): an import, not loading
    baseline, file_baseline = rss_kib(), rss_kib("RssFile")
    if not reset_peak():
        raise RuntimeError("cannot reset the peak RSS counter (/proc/self/clear_refs); the peak would "
                           "include the imports")
    start = time.perf_counter()
    if method == "ours":
        model = load_model(path, dtype=dtype)
    elif method == "naive":
        model = Transformer(args)  # random float32 initial weights: the first copy
        state = torch.load(Path(path) / "consolidated.00.pth", map_location="cpu", weights_only=True)  # the second
        state.pop("rope.freqs", None)
        model.load_state_dict(state)  # copied into the float32 parameters
        del state
    else:
        raise ValueError(f"unknown method {method!r}; use ours or naive")
    seconds = time.perf_counter() - start
    with torch.no_grad():
        # Read every weight, in 1M-element chunks so the reduction's float32 temporaries stay small.
        checksum = sum(float(c.sum()) for p in model.parameters() for c in p.detach().reshape(-1).split(2**20))
    return {"method": method, "path": path, "dtype": dtype, "baseline_bytes": baseline * 1024,
            "peak_bytes": (rss_kib("VmHWM") - baseline) * 1024,
            # after loading and touching: how much of the resident memory is file-backed pages, which
            # the kernel may drop and re-read under memory pressure (anonymous memory it cannot)
            "file_backed_bytes": (rss_kib("RssFile") - file_baseline) * 1024,
            "model_bytes": sum(p.nbytes for p in model.parameters()),
            "seconds": seconds, "checksum": checksum}


def file_bytes(path: str | Path) -> int:
    """Bytes of a checkpoint file, or of all files in a checkpoint directory."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file()) if path.is_dir() else path.stat().st_size


def measure(method: str, path: str | Path, dtype: str | None = None, timeout: float = 600) -> dict:
    """Run the probe in a fresh Python process; its result as a dict (bytes, seconds)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "llama_from_scratch.checkpoints.memory_probe", method, str(path)] + ([dtype] if dtype else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {method} {path} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["file_bytes"] = file_bytes(path)
    return result


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)))
