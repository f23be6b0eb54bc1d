"""Every loader gives a model in one state: eval mode, trainable parameters; and it trains.

For each format (llama2.c .bin and .pt, Meta 1 and 2 shards, Hugging Face safetensors, .bin
and sharded) a random model is written, loaded with `load_model`, and checked against the
source model: same logits (bit for bit: only data moved), then a few AdamW steps on a fixed
batch must lower the loss and change the weights, while every file of the checkpoint stays
byte-identical (sha256): memory-mapped parameters are private copy-on-write mappings, so an
optimizer step never writes into the checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import randomised

from llama_from_scratch.checkpoints import hf_writer, meta_format
from llama_from_scratch.checkpoints.assign import load_state_dict_into
from llama_from_scratch.checkpoints.llama2c import save_bin
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer

# llama2.c's header fixes norm_eps 1e-5 and theta 10,000: the defaults, so one model suits all.
ARGS = ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=96, hidden_dim=96, max_seq_len=32)
FORMATS = ["llama2c-bin", "llama2c-pt", "meta-1", "meta-2", "hf-safetensors", "hf-bin", "hf-sharded"]
MAPPED = {"meta-1", "hf-safetensors", "hf-bin", "hf-sharded"}  # own dtype, one file per tensor: assigned


def write(model: Transformer, fmt: str, root: Path) -> Path:
    """`model` written in `fmt` under `root`; the path `load_model` takes."""
    if fmt == "llama2c-bin":
        save_bin(model, root / "model.bin")
        return root / "model.bin"
    if fmt == "llama2c-pt":  # what llama2.c's train.py saves (see tests/test_llama2c.py)
        a = model.args
        torch.save({"model": model.state_dict(), "iter_num": 0,
                    "model_args": dict(dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads, n_kv_heads=a.n_kv_heads,
                                       vocab_size=a.vocab_size, multiple_of=a.multiple_of,
                                       max_seq_len=a.max_seq_len, dropout=0.0)}, root / "ckpt.pt")
        return root / "ckpt.pt"
    if fmt.startswith("meta"):
        meta_format.save_meta(model, root / "meta", n_shards=int(fmt[-1]))
        return root / "meta"
    sizes = {"hf-safetensors": None, "hf-bin": None, "hf-sharded": 60_000}
    files = hf_writer.save_hf(model, root / "hf", max_shard_bytes=sizes[fmt], safe=fmt != "hf-bin")
    assert (len(files) > 1) == (fmt == "hf-sharded")
    return root / "hf"


def digests(path: Path) -> dict[str, str]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def private_mappings(path: Path) -> dict[tuple[int, int], str]:
    """Address ranges where this process maps a file of `path`, with their permissions (Linux)."""
    names = {str(p.resolve()) for p in (path.iterdir() if path.is_dir() else [path])}
    out = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] in names:
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            out[(lo, hi)] = parts[1]  # e.g. "rw-p": p = private (copy-on-write), s = shared
    return out


def assert_loaded_state(model: Transformer) -> None:
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(p.is_leaf and p.grad is None for p in model.parameters())


def train(model: Transformer, steps: int = 5) -> list[float]:
    """Losses of `steps` AdamW steps on one fixed batch (next-token cross-entropy)."""
    batch = torch.randint(0, ARGS.vocab_size, (4, 17), generator=torch.Generator().manual_seed(0))
    x, y = batch[:, :-1], batch[:, 1:]  # (4, 16) each
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps + 1):
        loss = F.cross_entropy(model(x).reshape(-1, ARGS.vocab_size), y.reshape(-1))
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return losses


@pytest.fixture(scope="module")
def source():
    return randomised(ARGS)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_loaded_model_is_trainable_in_eval_mode_and_training_leaves_the_file_alone(tmp_path, source, fmt):
    path = write(source, fmt, tmp_path)
    before = digests(path)
    model = load_model(path)
    assert_loaded_state(model)

    tokens = torch.randint(0, ARGS.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(model(tokens), source(tokens))
    if Path("/proc/self/maps").exists():  # Linux: the case that matters, parameters that are the file's pages
        maps = private_mappings(path)
        mapped = [p for p in model.parameters() if any(lo <= p.data_ptr() < hi for lo, hi in maps)]
        assert (len(mapped) > 0) == (fmt in MAPPED), fmt
        assert all(perm.endswith("p") for perm in maps.values()), maps  # private: copy-on-write

    losses = train(model)
    assert losses[-1] < losses[0] - 0.05, losses
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, source.state_dict()[k])]
    assert changed == list(source.state_dict()), "every weight should have moved"
    assert digests(path) == before  # the optimizer wrote into memory, never into the checkpoint
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in load_model(path).state_dict().items())


def test_a_tied_llama2c_model_stays_tied_while_training(tmp_path):
    tied = randomised(ModelArgs(dim=64, n_layers=1, n_heads=4, vocab_size=96, hidden_dim=96, max_seq_len=32,
                                tie_embeddings=True))
    save_bin(tied, tmp_path / "tied.bin")
    model = load_model(tmp_path / "tied.bin")
    assert_loaded_state(model)
    assert model.output.weight is model.tok_embeddings.weight
    losses = train(model, steps=3)
    assert losses[-1] < losses[0] and model.output.weight is model.tok_embeddings.weight


def test_load_state_dict_into_and_from_hf_model_give_the_same_state(source):
    pytest.importorskip("transformers")
    from llama_from_scratch.checkpoints.hf_reference import from_hf_model, to_hf_model

    copies = {k: v.clone() for k, v in source.state_dict().items()}  # assigned, not copied: clone first
    for model in (load_state_dict_into(ARGS, copies, "a state dict"), from_hf_model(to_hf_model(source))):
        assert_loaded_state(model)
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
        losses = train(model, steps=3)
        assert losses[-1] < losses[0]
    assert all(torch.equal(v, randomised(ARGS).state_dict()[k]) for k, v in source.state_dict().items())
