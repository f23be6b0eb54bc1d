"""Loading llama2.c checkpoints: the real stories260K (.bin) and a .pt training checkpoint we write."""

import struct

import pytest
import torch

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.checkpoints.hf_reference import to_hf_model
from llama_from_scratch.checkpoints.llama2c import load_bin, load_pt, save_bin
from llama_from_scratch.checkpoints.load import load_model
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.model.config import preset
from llama_from_scratch.model.rope import precompute_freqs
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer

STORIES = "stories260K/stories260K.bin"


@pytest.fixture(scope="module")
def stories():
    return load_bin(datafiles.path(STORIES))


def test_stories260k_header_and_weights(stories):
    args = stories.args
    assert (args.dim, args.ffn_hidden_dim, args.n_layers, args.n_heads, args.kv_heads,
            args.vocab_size, args.max_seq_len) == (64, 172, 5, 8, 4, 512, 512)
    assert args.tie_embeddings and stories.output.weight is stories.tok_embeddings.weight
    assert args == preset("stories260K")
    # The first embedding row is the first 64 floats after the 28-byte header.
    raw = datafiles.path(STORIES).read_bytes()
    first = torch.tensor(struct.unpack_from("<64f", raw, 28))
    assert torch.equal(stories.tok_embeddings.weight[0], first)


def test_stories260k_stored_rope_tables_equal_ours():
    """The file also stores llama2.c's freqs_cos / freqs_sin: our precompute_freqs gives the same bits."""
    raw = datafiles.path(STORIES).read_bytes()
    n = 512 * 4  # max_seq_len x head_dim / 2
    tail = torch.frombuffer(bytearray(raw[-2 * n * 4:]), dtype=torch.float32)
    cos, sin = precompute_freqs(8, 512)
    assert torch.equal(tail[:n].view(512, 4), cos) and torch.equal(tail[n:].view(512, 4), sin)


def test_save_bin_writes_back_the_identical_file(stories, tmp_path):
    save_bin(stories, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == datafiles.path(STORIES).read_bytes()


def test_stories260k_tells_a_story(stories):
    tokenizer = Llama2cTokenizer.from_file(datafiles.path("stories260K/tok512.bin"))
    ids = generate(stories, [[1]], max_new_tokens=120, temperature=0.0, stop_ids=[1])[0]
    text = tokenizer.decode_continuation(ids, 1)  # as llama2.c's run.c prints it after BOS
    words = text.replace(",", " ").replace(".", " ").replace('"', " ").split()
    assert text.lstrip().startswith("Once upon a time")
    common = {"the", "a", "was", "she", "he", "to", "and", "named", "little", "play", "her", "it"}
    assert sum(w.lower() in common for w in words) >= 15, text
    assert all(w.isascii() for w in words), text


def test_stories260k_logits_equal_transformers(stories):
    hf = to_hf_model(stories)
    tokens = torch.tensor([[1, 403, 385, 410, 317, 407, 300, 301], [1, 20, 30, 40, 50, 60, 70, 80]])
    with torch.no_grad():
        torch.testing.assert_close(stories(tokens), hf(tokens).logits, atol=1e-5, rtol=1e-5)
        greedy = generate(stories, [[1]], 60, temperature=0.0)[0]
        hf_ids = hf.generate(torch.tensor([[1]]), max_new_tokens=60, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, 1:].tolist()
    assert greedy == hf_ids


# --- bad checkpoints --------------------------------------------------------------------------

def test_truncated_file_names_header_and_size(tmp_path):
    raw = datafiles.path(STORIES).read_bytes()
    bad = tmp_path / "cut.bin"
    bad.write_bytes(raw[:-100])
    with pytest.raises(CheckpointError) as err:
        load_bin(bad)
    msg = str(err.value)
    assert "1,056,440 bytes" in msg and "1,056,540 bytes" in msg and "dim=64" in msg and "hidden_dim=172" in msg


def test_header_that_contradicts_the_expected_config(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_bin(datafiles.path(STORIES), expected=preset("stories260K", n_layers=6))
    assert "n_layers=5" in str(err.value) and "n_layers=6" in str(err.value)
    bad = tmp_path / "hdr.bin"
    raw = bytearray(datafiles.path(STORIES).read_bytes())
    raw[8:12] = struct.pack("<i", 6)  # header says 6 layers, the tensors are for 5
    bad.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="n_layers=6"):
        load_bin(bad)


def test_other_bad_files(tmp_path):
    (tmp_path / "short.bin").write_bytes(b"abc")
    with pytest.raises(CheckpointError, match="too short"):
        load_bin(tmp_path / "short.bin")
    (tmp_path / "v1.bin").write_bytes(struct.pack("<Ii", 0x616B3432, 1) + bytes(300))
    with pytest.raises(CheckpointError, match="version 0"):
        load_bin(tmp_path / "v1.bin")
    (tmp_path / "heads.bin").write_bytes(struct.pack("<7i", 64, 172, 5, 7, 7, 512, 512))
    with pytest.raises(CheckpointError, match="n_heads=7"):
        load_bin(tmp_path / "heads.bin")
    (tmp_path / "x.gguf").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_model(tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="directory"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "missing.bin")


# --- llama2.c .pt training checkpoints ---------------------------------------------------------

def write_llama2c_ckpt(model, path, compiled=False):
    """What llama2.c's train.py saves: model state dict (Meta names, freqs buffers not persistent),
    optimizer state, model_args, iter_num, best_val_loss, config."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    args = model.args
    prefix = "_orig_mod." if compiled else ""
    torch.save({
        "model": {prefix + k: v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "model_args": dict(dim=args.dim, n_layers=args.n_layers, n_heads=args.n_heads,
                           n_kv_heads=args.n_kv_heads, vocab_size=args.vocab_size,
                           multiple_of=args.multiple_of, max_seq_len=args.max_seq_len, dropout=0.0),
        "iter_num": 100, "best_val_loss": torch.tensor(1.5).item(),
        "config": {"batch_size": 8, "learning_rate": 5e-4, "dtype": "float32"},
    }, path)


@pytest.mark.parametrize("tied, compiled", [(True, False), (False, True)])
def test_load_pt_training_checkpoint(tmp_path, tied, compiled):
    from llama_from_scratch.model.transformer import Transformer
    torch.manual_seed(0)
    model = Transformer(preset("tiny", tie_embeddings=tied))
    write_llama2c_ckpt(model, tmp_path / "ckpt.pt", compiled)
    loaded = load_model(tmp_path / "ckpt.pt")
    assert loaded.args.tie_embeddings == tied
    assert (loaded.output.weight is loaded.tok_embeddings.weight) == tied
    tokens = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model.eval()(tokens))


def test_load_pt_refuses_other_files(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="model_args"):
        load_pt(tmp_path / "other.pt")
