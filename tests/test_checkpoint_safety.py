"""Untrusted and broken checkpoints: refused with a clear error, never half-loaded; and
memory-efficient loading really assigns the memory-mapped file's pages, not copies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llama_from_scratch.checkpoints import hf_reader, hf_writer, meta_format
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer

ARGS = ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16, max_seq_len=4096)


class CreatesAFile:
    """Unpickling this calls open(marker, "w"): code that runs on load if pickle is trusted."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ARGS).eval()


def malicious_state_dict(marker: Path) -> dict:
    sd = dict(model().state_dict())
    sd["layers.0.ffn_norm.weight"] = CreatesAFile(marker)
    return sd


def test_the_malicious_pickle_does_run_code_without_weights_only(tmp_path):
    """The test below can fail: this file really would create the marker."""
    marker = tmp_path / "pwned"
    torch.save(malicious_state_dict(marker), tmp_path / "evil.pth")
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["meta", "hf-bin", "llama2c-pt"])
def test_a_pickle_that_runs_code_is_refused_and_its_code_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    evil = malicious_state_dict(marker)
    if fmt == "meta":
        meta_format.save_meta(model(), tmp_path / "ckpt")
        torch.save(evil, tmp_path / "ckpt" / "consolidated.00.pth")
        path = tmp_path / "ckpt"
    elif fmt == "hf-bin":
        hf_writer.save_hf(model(), tmp_path / "ckpt", safe=False)
        torch.save({"model.norm.weight": CreatesAFile(marker)}, tmp_path / "ckpt" / "pytorch_model.bin")
        path = tmp_path / "ckpt"
    else:
        path = tmp_path / "ckpt.pt"
        torch.save({"model": evil, "model_args": {}}, path)
    with pytest.raises(CheckpointError, match=r"refusing to load .*weights_only=True"):
        load_model(path)
    assert not marker.exists(), "the checkpoint's code ran"


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    meta_format.save_meta(model(), tmp_path)
    sd = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    del sd["layers.1.attention.wv.weight"], sd["norm.weight"]
    sd["layers.1.attention.wqkv.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "consolidated.00.pth")
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert "2 missing key(s): layers.1.attention.wv.weight, norm.weight" in message
    assert "1 unexpected key(s): layers.1.attention.wqkv.weight" in message
    assert "Nothing was loaded" in message


def test_a_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    hf_writer.save_hf(model(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(config, intermediate_size=80)))
    with pytest.raises(CheckpointError, match=r"layers\.0\.feed_forward\.w1\.weight has shape \(96, 32\) "
                                              r"in the checkpoint but the model \(from its config\) needs \(80, 32\)"):
        load_model(tmp_path)


def test_a_missing_meta_shard_is_named(tmp_path):
    meta_format.save_meta(model(), tmp_path, n_shards=4)
    (tmp_path / "consolidated.02.pth").unlink()
    with pytest.raises(CheckpointError, match=r"consolidated\.02\.pth is missing"):
        load_model(tmp_path)
    (tmp_path / "consolidated.03.pth").unlink()  # the last shards gone: the merged shapes are short
    with pytest.raises(CheckpointError, match=r"2 shard\(s\) but params.json implies 4: wq has 16 of 32 rows; "
                                              r"consolidated\.02\.pth to consolidated\.03\.pth are missing"):
        load_model(tmp_path)


def test_a_missing_hf_shard_is_named(tmp_path):
    files = hf_writer.save_hf(model(), tmp_path, max_shard_bytes=20_000)
    assert len(files) > 2
    files[1].unlink()
    with pytest.raises(CheckpointError, match=f"lists {files[1].name}, which is missing"):
        load_model(tmp_path)


@pytest.mark.parametrize("ext", ["safetensors", "pth"])
def test_a_truncated_file_is_named(tmp_path, ext):
    if ext == "safetensors":
        hf_writer.save_hf(model(), tmp_path)
        path = tmp_path / "model.safetensors"
    else:
        meta_format.save_meta(model(), tmp_path)
        path = tmp_path / "consolidated.00.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=f"cannot read {path}.*truncated"):
        load_model(tmp_path)


def test_never_a_half_loaded_model(tmp_path, monkeypatch):
    """A wrong shape in the last shard is found before any tensor is put into the model."""
    hf_writer.save_hf(model(), tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    last = sorted(set(index["weight_map"].values()))[-1]
    from safetensors.torch import load_file, save_file

    tensors = load_file(tmp_path / last)
    key = next(iter(tensors))
    tensors[key] = torch.zeros(3, 3)
    save_file(tensors, str(tmp_path / last), metadata={"format": "pt"})
    put = []
    monkeypatch.setattr(hf_reader, "put_tensor", lambda *a, **k: put.append(a[1]))
    with pytest.raises(CheckpointError, match=r"has shape \(3, 3\)"):
        load_model(tmp_path)
    assert put == []


def file_mappings(path: Path) -> list[tuple[int, int]]:
    """Address ranges where this process has `path` memory-mapped (Linux /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and Path(parts[5]) == path.resolve():
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("fmt", ["meta", "hf"])
def test_own_dtype_loading_assigns_the_mapped_file_and_converting_copies(tmp_path, fmt):
    m = model().to(torch.bfloat16)
    if fmt == "meta":
        meta_format.save_meta(m, tmp_path)
        path = tmp_path / "consolidated.00.pth"
    else:
        hf_writer.save_hf(m, tmp_path)
        path = tmp_path / "model.safetensors"
    loaded = load_model(tmp_path)
    ranges = file_mappings(path)
    assert ranges, "the checkpoint is not memory-mapped"

    def in_file(t: torch.Tensor) -> bool:
        return any(lo <= t.data_ptr() < hi for lo, hi in ranges)

    permuted = ("attention.wq", "attention.wk")  # HF's q/k rows must be reordered: a copy
    for name, p in loaded.named_parameters():
        expect = not (fmt == "hf" and any(s in name for s in permuted))
        assert in_file(p) == expect, name
    converted = load_model(tmp_path, dtype=torch.float32)
    assert not any(in_file(p) for p in converted.parameters())


@pytest.mark.parametrize("fmt", ["meta", "llama2c-pt"])
def test_the_cli_refuses_a_malicious_checkpoint_in_one_line(tmp_path, fmt, capsys):
    from llama_from_scratch.cli.main import main

    marker = tmp_path / "pwned"
    if fmt == "meta":
        meta_format.save_meta(model(), tmp_path / "ckpt")
        torch.save(malicious_state_dict(marker), tmp_path / "ckpt" / "consolidated.00.pth")
        path = tmp_path / "ckpt"
    else:
        path = tmp_path / "ckpt.pt"
        torch.save({"model": malicious_state_dict(marker), "model_args": {}}, path)
    assert main(["generate", "--checkpoint", str(path), "--prompt-ids", "1", "--print-ids"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing to load") and err.count("\n") == 1
    assert not marker.exists()


def test_unknown_params_json_settings_are_refused_not_ignored(tmp_path):
    meta_format.save_meta(model(), tmp_path)
    params = json.loads((tmp_path / "params.json").read_text())
    (tmp_path / "params.json").write_text(json.dumps({**params, "use_scaled_rope": True}))
    with pytest.raises(CheckpointError, match=r"does not handle: \['use_scaled_rope'\]"):
        load_model(tmp_path)
