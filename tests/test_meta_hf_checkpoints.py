"""Meta's and Hugging Face's checkpoint formats: readers, writers, shard merging, round trips.

References: transformers' own `save_pretrained` / `from_pretrained` (an independent writer
and reader), shards cut by hand along the dimensions Meta's parallel layers use, and
`torch.equal` wherever only data moves.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from model_fixtures import randomised

from llama_from_scratch.checkpoints import hf_writer, meta_format, model_parallel
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.hf_reference import to_hf_model
from llama_from_scratch.checkpoints.load import detect_format, load_model, read_args
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.transformer import Transformer

GQA = ModelArgs(dim=64, n_layers=2, n_heads=8, n_kv_heads=4, vocab_size=100, multiple_of=32, max_seq_len=4096)
MHA = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=96, multiple_of=32, rope_theta=500000.0,
                max_seq_len=4096)


def assert_same_weights(a: Transformer, b: Transformer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# --- Meta's format -----------------------------------------------------------------------

def test_shard_dims_follow_metas_parallel_layers():
    want = {"tok_embeddings.weight": 1, "output.weight": 0, "norm.weight": None,
            "layers.0.attention.wq.weight": 0, "layers.0.attention.wk.weight": 0,
            "layers.0.attention.wv.weight": 0, "layers.0.attention.wo.weight": 1,
            "layers.0.feed_forward.w1.weight": 0, "layers.0.feed_forward.w2.weight": 1,
            "layers.0.feed_forward.w3.weight": 0, "layers.0.attention_norm.weight": None,
            "layers.0.ffn_norm.weight": None}
    assert {k: model_parallel.shard_dim(k) for k in want} == want


def write_hand_cut_shards(model: Transformer, directory, n: int) -> None:
    """Meta's layout written without our writer: slices cut here, by the table in Meta's code."""
    directory.mkdir()
    rows = ("wq", "wk", "wv", "w1", "w3", "output")  # ColumnParallelLinear: output rows
    cols = ("wo", "w2", "tok_embeddings")  # RowParallelLinear / ParallelEmbedding: input columns
    sd = model.state_dict()
    for rank in range(n):
        shard = {"rope.freqs": torch.rand(model.args.head_dim // 2)}  # ignored by the loader
        for k, v in sd.items():
            kind = k.split(".")[-2]
            if kind in rows:
                step = v.shape[0] // n
                shard[k] = v[rank * step:(rank + 1) * step].clone()
            elif kind in cols:
                step = v.shape[1] // n
                shard[k] = v[:, rank * step:(rank + 1) * step].clone()
            else:
                shard[k] = v.clone()
        torch.save(shard, directory / f"consolidated.{rank:02d}.pth")
    params = {"dim": model.args.dim, "multiple_of": model.args.multiple_of, "n_heads": model.args.n_heads,
              "n_layers": model.args.n_layers, "norm_eps": 1e-05, "vocab_size": -1}
    if model.args.n_kv_heads is not None:
        params["n_kv_heads"] = model.args.n_kv_heads
    if model.args.rope_theta != 10000.0:
        params["rope_theta"] = model.args.rope_theta
    (directory / "params.json").write_text(json.dumps(params))


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("args", [GQA, MHA], ids=["gqa", "mha"])
def test_hand_cut_meta_shards_merge_to_the_original(tmp_path, args, n):
    model = randomised(args, dtype=torch.bfloat16)
    write_hand_cut_shards(model, tmp_path / "ckpt", n)
    assert detect_format(tmp_path / "ckpt") == "meta"
    assert read_args(tmp_path / "ckpt") == args  # vocab_size -1 -> the embedding's rows
    loaded = load_model(tmp_path / "ckpt")
    assert_same_weights(loaded, model)
    tokens = torch.randint(0, args.vocab_size, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), model(tokens), atol=0, rtol=0)


def test_meta_writer_matches_metas_params_json_and_layout(tmp_path):
    model = randomised(GQA)
    paths = meta_format.save_meta(model, tmp_path / "m", n_shards=2)
    assert [p.name for p in paths] == ["consolidated.00.pth", "consolidated.01.pth"]
    params = json.loads((tmp_path / "m" / "params.json").read_text())
    assert params == {"dim": 64, "multiple_of": 32, "n_heads": 8, "n_layers": 2, "norm_eps": 1e-05,
                      "vocab_size": -1, "n_kv_heads": 4}
    shard = torch.load(paths[1], weights_only=True)
    sd = model.state_dict()
    torch.testing.assert_close(shard["layers.1.attention.wk.weight"], sd["layers.1.attention.wk.weight"][16:],
                               atol=0, rtol=0)
    torch.testing.assert_close(shard["layers.0.feed_forward.w2.weight"],
                               sd["layers.0.feed_forward.w2.weight"][:, 96:], atol=0, rtol=0)
    assert "rope.freqs" in shard
    mha_params = meta_format.args_to_params(ModelArgs(dim=4096, n_layers=32, n_heads=32))
    assert mha_params == {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05,
                          "vocab_size": -1}  # LLaMA 2 7B's params.json, byte for byte in content


def test_meta_to_hf_to_meta_is_bit_exact(tmp_path):
    args = dataclasses.replace(GQA, multiple_of=256)  # LLaMA 2's: HF keeps only the result, 256
    model = randomised(args, dtype=torch.bfloat16)
    meta_format.save_meta(model, tmp_path / "a", n_shards=2)
    hf_writer.save_hf(load_model(tmp_path / "a"), tmp_path / "hf", max_shard_bytes=40_000)
    meta_format.save_meta(load_model(tmp_path / "hf"), tmp_path / "b", n_shards=2)
    for name in ("consolidated.00.pth", "consolidated.01.pth"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / name, weights_only=True)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype == torch.bfloat16, k
            assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a" / "params.json").read_text() == (tmp_path / "b" / "params.json").read_text()


# --- Hugging Face's format ---------------------------------------------------------------

@pytest.mark.parametrize("kind", ["single", "sharded", "bin", "tied"])
def test_hf_writer_loads_in_transformers_with_the_same_logits(tmp_path, kind):
    from transformers import LlamaForCausalLM

    args = ModelArgs(dim=32, n_layers=2, n_heads=4, vocab_size=50, multiple_of=8, max_seq_len=64,
                     tie_embeddings=True) if kind == "tied" else MHA
    model = randomised(args)
    files = hf_writer.save_hf(model, tmp_path, max_shard_bytes=30_000 if kind == "sharded" else None,
                                  safe=kind != "bin")
    assert len(files) > 2 if kind == "sharded" else len(files) == 1
    hf = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert hf.dtype == torch.float32
    torch.manual_seed(1)
    tokens = torch.randint(0, args.vocab_size, (2, 11))
    with torch.no_grad():
        ours, theirs = model(tokens), hf(tokens).logits
    assert ours.abs().max() > 0.5
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert_same_weights(load_model(tmp_path), model)


@pytest.mark.parametrize("max_shard_size", [None, "40KB"])
def test_reads_a_directory_written_by_transformers(tmp_path, max_shard_size):
    model = randomised(GQA)
    hf = to_hf_model(model)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    hf.save_pretrained(tmp_path, **kwargs)
    assert (tmp_path / "model.safetensors.index.json").exists() == (max_shard_size is not None)
    loaded = load_model(tmp_path)
    assert loaded.args.ffn_hidden_dim == GQA.ffn_hidden_dim and loaded.args.kv_heads == GQA.kv_heads
    assert_same_weights(loaded, model)


def test_rope_theta_in_transformers_4_and_5_configs(tmp_path):
    hf_writer.save_hf(randomised(MHA), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == 500000.0
    for variant, theta in [("4.x", 500000.0), ("5.x", 500000.0), ("old", 10000.0)]:
        c = dict(config)
        if variant != "5.x":
            del c["rope_parameters"]
        if variant != "4.x":
            del c["rope_theta"]
        (tmp_path / "config.json").write_text(json.dumps(c))
        assert read_args(tmp_path).rope_theta == theta, variant
    c = dict(config, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0})
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        read_args(tmp_path)


def test_old_bin_checkpoints_with_rotary_inv_freq_load(tmp_path):
    """2023-era pytorch_model-*.bin files also hold rotary_emb.inv_freq buffers."""
    model = randomised(GQA)
    hf_writer.save_hf(model, tmp_path, safe=False)
    sd = torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.rand(4)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    assert_same_weights(load_model(tmp_path), model)


def test_safetensors_refuses_shared_tensors_so_tied_and_view_weights_are_written_apart(tmp_path):
    from safetensors.torch import save_file

    t = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="share memory"):
        save_file({"a": t, "b": t}, str(tmp_path / "x.safetensors"))
    # stories260K from llama2.c: tied, and every tensor is a view of one buffer.
    from llama_from_scratch import datafiles

    stories = load_model(datafiles.path("stories260K/stories260K.bin"))
    hf_writer.save_hf(stories, tmp_path / "hf")
    reloaded = load_model(tmp_path / "hf")
    assert reloaded.output.weight is reloaded.tok_embeddings.weight
    assert_same_weights(reloaded, stories)


def test_dtype_and_device_arguments_convert(tmp_path):
    model = randomised(GQA, dtype=torch.bfloat16)
    meta_format.save_meta(model, tmp_path / "m", n_shards=2)
    hf_writer.save_hf(model, tmp_path / "h")
    for path in (tmp_path / "m", tmp_path / "h"):
        loaded = load_model(path, device="cpu", dtype="float32")
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        assert_same_weights(loaded, model.float())
        assert loaded.freqs_cos.device.type == "cpu"
