"""The pretraining data pipeline: corpus encoding, the token cache, training and evaluation batches.

Checked against real things: sentencepiece's own encoder (LLaMA 2's model, models sentencepiece
trains with other normalizer options, a model our trainer writes), llama2.c's encoder on the whole
text, real subprocesses building one cache at once, and a real SIGKILL in the middle of a build.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
from hypothesis import given, settings, strategies as st

from llama_from_scratch import datafiles
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer
from llama_from_scratch.tokenizer.load import load_tokenizer
from llama_from_scratch.tokenizer.sentencepiece_bpe import SentencePieceBPE
from llama_from_scratch.tokenizer.sentencepiece_model import parse_model, serialize_model, write_model
from llama_from_scratch.tokenizer.sentencepiece_trainer import train as train_bpe
from llama_from_scratch.training import data
from llama_from_scratch.training.batches import BatchSampler, CorpusTooShortError, eval_windows
from llama_from_scratch.training.corpus_encoding import encode_corpus, segment_chars, segments, tokenizer_identity
from llama_from_scratch.training.data import CorpusError, TokenCacheError, TokenFile, tokenize_file
from tools.notebooks import ROOT

TRICKY = ("  Hello  world\n\n a b\tc  \n\u2581x \u2581 y caf\u00e9 \U0001f600 z \u00a0 q\r\n end ab\u2581 c x\u0301 "
          "\u4f60\u597d  .  ")
TEXTS = st.text(alphabet=st.sampled_from(list("  \t\n\u2581ab.Th e\u00e9\u4f60\U0001f600\u0301")), max_size=40)


def ids_of(text, tokenizer, min_chars=None):
    return [i for ids, _ in encode_corpus(text, tokenizer, min_chars) for i in ids]


@pytest.fixture(scope="module")
def shakespeare():
    return datafiles.path("tinyshakespeare.txt")


@pytest.fixture(scope="module")
def text(shakespeare):
    return shakespeare.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def llama():
    return load_tokenizer(datafiles.path("llama2_tokenizer.model"))


@pytest.fixture(scope="module")
def llama_sp():
    return spm.SentencePieceProcessor(model_file=str(datafiles.path("llama2_tokenizer.model")))


@pytest.fixture(scope="module")
def tok512():
    return load_tokenizer(datafiles.path("stories260K/tok512.bin"))


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory, text):
    """A `.model` written by our trainer, loaded back from the file like any other."""
    path = tmp_path_factory.mktemp("trained") / "bpe512.model"
    write_model(train_bpe(text[:100_000], 512), path)
    return path


# ------------------------------------------------------------------ encoding a corpus exactly


def test_llama2_whole_shakespeare_equals_sentencepiece_and_is_fast(tmp_path, shakespeare, text, llama, llama_sp):
    start = time.perf_counter()
    tokens = tokenize_file(shakespeare, llama, tmp_path)
    seconds = time.perf_counter() - start
    assert seconds < 10, f"tokenizing tinyshakespeare took {seconds:.1f} s"  # about 0.7 s here
    assert tokens.tokens.dtype == np.uint16 and isinstance(tokens.tokens, np.memmap)
    assert tokens.tokens[0] == llama.bos_id
    assert tokens.tokens[1:].tolist() == llama_sp.encode(text)


def test_trained_model_file_equals_sentencepiece(tmp_path, shakespeare, text, trained_model):
    tokenizer = load_tokenizer(trained_model)
    assert isinstance(tokenizer, SentencePieceBPE) and segment_chars(tokenizer) is not None
    tokens = tokenize_file(shakespeare, tokenizer, tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(trained_model))
    assert tokens.tokens.tolist() == [sp.bos_id()] + sp.encode(text)


def test_llama2c_segments_equal_run_c_encoding_of_the_whole_text(text, tok512):
    assert segment_chars(tok512) == 1  # no token holds a non-space followed by a space
    for sample in (text[:3000], text[500_000:502_000], TRICKY):
        assert ids_of(sample, tok512) == tok512.encode(sample)


@settings(max_examples=150, deadline=None)
@given(TEXTS)
def test_cut_at_every_boundary_changes_no_id(llama, llama_sp, tok512, sample):
    assert "".join(segments(sample, 1)) == sample
    assert ids_of(sample, llama, min_chars=1) == llama_sp.encode(sample)
    assert ids_of(sample, tok512, min_chars=1) == tok512.encode(sample)


SP_VARIANTS = {
    "remove-extra-whitespaces": dict(remove_extra_whitespaces=True),
    "whitespace-as-suffix": dict(remove_extra_whitespaces=False, treat_whitespace_as_suffix=True),
    "no-dummy-prefix": dict(remove_extra_whitespaces=False, add_dummy_prefix=False),
    "no-byte-fallback": dict(byte_fallback=False, character_coverage=0.98),
    "no-byte-fallback-no-space-piece": dict(byte_fallback=False, character_coverage=0.98),  # "▁" dropped below
}


@pytest.mark.parametrize("variant", list(SP_VARIANTS))
def test_other_sentencepiece_options_stay_exact(variant, text):
    """Models sentencepiece trains with other normalizer options: cut where the rule allows it,
    encoded whole where it does not (no dummy prefix, whitespace as suffix); equal ids either way."""
    options = dict(model_type="bpe", vocab_size=600, byte_fallback=True, character_coverage=1.0,
                   normalization_rule_name="identity", minloglevel=2)
    options.update(SP_VARIANTS[variant])
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()[:4000]), model_writer=out, **options)
    model = parse_model(out.getvalue())
    if variant == "no-byte-fallback-no-space-piece":  # a lone "▁" is <unk>, folded into an <unk> before it
        model.pieces = [p for p in model.pieces if p.piece != "\u2581"]
    ours = SentencePieceBPE(model)
    sp = spm.SentencePieceProcessor(model_proto=serialize_model(model))
    assert (segment_chars(ours) is None) == (variant not in ("remove-extra-whitespaces", "no-byte-fallback"))
    for sample in (TRICKY, text[:20_000], "Q\u00fe\u00fe x \u00fe\u00fe y", "a$ $b \u00e9 \u00e9"):
        assert ids_of(sample, ours, min_chars=1) == sp.encode(sample)


def test_a_vocabulary_with_a_space_inside_a_token_is_encoded_whole(tok512):
    vocab = [*tok512.vocab, b" a b"]
    tokenizer = Llama2cTokenizer(vocab, [*tok512.scores, 1e6], tok512.max_token_length)
    assert segment_chars(tokenizer) is None
    assert ids_of("a b a b", tokenizer, min_chars=1) == tokenizer.encode("a b a b")
    assert tokenizer.encode("a b") == [vocab.index(b" a b")]  # the merge that cutting would have missed


def test_tokenizer_identity(llama, tok512, trained_model):
    again = load_tokenizer(datafiles.path("llama2_tokenizer.model"))
    assert tokenizer_identity(llama) == tokenizer_identity(again)
    ids = {tokenizer_identity(t) for t in (llama, tok512, load_tokenizer(trained_model),
                                           SentencePieceBPE(tok512.to_sentencepiece_model()))}
    assert len(ids) == 4  # the same vocabulary as another class is another tokenizer
    changed = Llama2cTokenizer(tok512.vocab, [*tok512.scores[:-1], tok512.scores[-1] - 1], tok512.max_token_length)
    assert tokenizer_identity(changed) != tokenizer_identity(tok512)
    with pytest.raises(TypeError, match="SentencePieceBPE"):
        tokenizer_identity(object())


# ------------------------------------------------------------------ the token file and its cache


def test_sidecar_splits_and_bytes(tmp_path, shakespeare, text, llama, tok512):
    raw = text.encode("utf-8")
    for tokenizer in (llama, tok512):
        tokens = tokenize_file(shakespeare, tokenizer, tmp_path)
        meta = json.loads(tokens.path.with_suffix(".json").read_text())
        n = len(tokens.tokens)
        assert tokens.path.name == f"tinyshakespeare-{meta['text_sha256'][:12]}-{meta['tokenizer_sha256'][:12]}.tokens"
        assert meta["n_tokens"] == n and meta["val_start"] == n - n // 10 and meta["bos"] is True
        assert meta["dtype"] == "uint16" and meta["vocab_size"] == tokenizer.vocab_size
        assert meta["text_bytes"] == len(raw) == meta["train_bytes"] + meta["val_bytes"]
        assert meta["tokens_bytes"] == tokens.path.stat().st_size == 2 * n
        assert len(tokens.train) == meta["val_start"] and len(tokens.val) == n // 10
        assert np.shares_memory(tokens.train, tokens.tokens)  # views, not copies
        # The byte counts are the text's own: the training tokens decode to its first train_bytes.
        assert tokenizer.decode(tokens.train[1:].tolist()).encode("utf-8") == raw[:meta["train_bytes"]]
        assert tokens.bytes_per_token("val") == meta["val_bytes"] / (n // 10)
    assert tokens.val.tolist() == tokens.tokens[-(n // 10):].tolist()
    with pytest.raises(ValueError, match="'train' or 'val'"):
        tokens.bytes_per_token("test")


def test_large_vocabulary_is_stored_as_uint32(tmp_path):
    specials = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    vocab = specials + [b" ", b"z", b"q"] + [f"f{k}".encode() for k in range(70_000 - len(specials) - 5)]
    vocab += [b"zq", b" zq"]
    tokenizer = Llama2cTokenizer(vocab, [0.0] * (len(vocab) - 2) + [1.0, 2.0], 6)
    corpus = tmp_path / "zq.txt"
    corpus.write_text("zq " * 40 + "zq")
    tokens = tokenize_file(corpus, tokenizer, tmp_path)
    assert tokens.meta["dtype"] == "uint32" and tokens.tokens.dtype == np.uint32
    assert tokens.tokens.tolist() == [1] + [69_999] * 41  # ids above 65535 survive


def test_reused_while_unchanged_without_tokenizing(tmp_path, shakespeare, llama, monkeypatch):
    first = tokenize_file(shakespeare, llama, tmp_path)
    stamps = [os.stat(p).st_mtime_ns for p in (first.path, first.path.with_suffix(".json"))]

    def must_not_run(*args, **kwargs):
        raise AssertionError("re-tokenized an unchanged text")

    monkeypatch.setattr(data, "encode_corpus", must_not_run)
    again = tokenize_file(shakespeare, llama, tmp_path)
    assert again.path == first.path and np.array_equal(again.tokens, first.tokens)
    assert [os.stat(p).st_mtime_ns for p in (first.path, first.path.with_suffix(".json"))] == stamps


def test_changed_text_or_tokenizer_rebuilds(tmp_path, llama, tok512):
    corpus = tmp_path / "story.txt"
    corpus.write_text("Once upon a time there was a cat.\n" * 20)
    cache = tmp_path / "cache"
    before = tokenize_file(corpus, llama, cache)
    corpus.write_text("Once upon a time there was a dog.\n" * 20)
    after = tokenize_file(corpus, llama, cache)
    assert after.path != before.path and after.tokens[1:].tolist() == llama.encode(corpus.read_text())
    other = tokenize_file(corpus, tok512, cache)
    assert other.path not in (before.path, after.path)
    assert other.tokens[1:].tolist() == tok512.encode(corpus.read_text())
    assert len(list(cache.glob("*.tokens"))) == 3 and not list(cache.glob(".*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar", "bad_sidecar", "no_tokens", "other_text"])
def test_a_damaged_or_stale_cache_is_never_used(tmp_path, llama, damage):
    corpus = tmp_path / "story.txt"
    corpus.write_text("The quick brown fox jumps over the lazy dog. " * 50)
    good = tokenize_file(corpus, llama, tmp_path)
    expected, text_sha = good.tokens.tolist(), good.meta["text_sha256"]
    path, sidecar = good.path, good.path.with_suffix(".json")
    del good
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-7])
    elif damage == "flip":  # same size, other content: only the sha256 can tell
        raw = bytearray(path.read_bytes())
        raw[10] ^= 1
        path.write_bytes(bytes(raw))
    elif damage == "no_sidecar":  # a kill between the two renames
        sidecar.unlink()
    elif damage == "bad_sidecar":
        sidecar.write_text('{"format": 1, "n_tok')
    elif damage == "no_tokens":
        path.unlink()
    else:  # a sidecar that belongs to another text
        meta = json.loads(sidecar.read_text())
        meta["text_sha256"] = "0" * 64
        sidecar.write_text(json.dumps(meta))
    with pytest.raises(TokenCacheError):
        TokenFile.open(path, text_sha256=text_sha)
    rebuilt = tokenize_file(corpus, llama, tmp_path)
    assert rebuilt.tokens.tolist() == expected
    assert TokenFile.open(path).tokens.tolist() == expected


def test_bad_text_files(tmp_path, llama):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"not UTF-8 text: byte 3 is b'\\xe9'"):
        tokenize_file(latin1, llama, tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(CorpusError, match="empty"):
        tokenize_file(empty, llama, tmp_path)
    with pytest.raises(FileNotFoundError):
        tokenize_file(tmp_path / "missing.txt", llama, tmp_path)


def test_progress_bar_only_for_large_files(tmp_path, llama, capsys, monkeypatch):
    corpus = tmp_path / "small.txt"
    corpus.write_text("to be or not to be " * 100)
    tokenize_file(corpus, llama, tmp_path / "a")
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(data, "PROGRESS_BYTES", 1000)
    tokenize_file(corpus, llama, tmp_path / "b")
    captured = capsys.readouterr()
    assert "tokenizing small.txt" in captured.err and captured.out == ""


def test_corpus_too_short_names_both_lengths(tmp_path, llama):
    corpus = tmp_path / "short.txt"
    corpus.write_text("To be, or not to be, that is the question. " * 10)
    tokens = tokenize_file(corpus, llama, tmp_path)
    n_train, n_val = len(tokens.train), len(tokens.val)
    tokens.check_context(n_val - 1)
    with pytest.raises(CorpusTooShortError) as err:
        tokens.check_context(n_val)
    message = str(err.value)
    assert f"{n_train} training and {n_val} validation tokens" in message
    assert f"window of {n_val} tokens needs {n_val + 1}" in message and f"at most {n_val - 1}" in message


# ------------------------------------------------------------------ atomic and concurrent builds

BUILD = """
import json, os, sys, time
from pathlib import Path
from llama_from_scratch.tokenizer.load import load_tokenizer
from llama_from_scratch.training import data
text, tokenizer, cache, go = sys.argv[1:5]
built = []
real_build = data._build
data._build = lambda *a, **k: (built.append(1), real_build(*a, **k))
tokenizer = load_tokenizer(tokenizer)
Path(f"{go}.{os.getpid()}.ready").touch()
while not Path(go).exists():
    time.sleep(0.005)
tokens = data.tokenize_file(text, tokenizer, cache)
print(json.dumps({"built": bool(built), "sha": tokens.meta["tokens_sha256"], "n": len(tokens.tokens)}))
"""


def synthetic_corpus(path: Path, n_words: int) -> str:
    """Random words: every word new, so the encoder's caches do not make it quick."""
    rng = random.Random(0)
    words = ("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(n_words))
    text = " ".join(w + ("\n" if rng.random() < 0.1 else "") for w in words)
    path.write_text(text, encoding="utf-8")
    return text


def start_builder(text_path: Path, cache: Path, go: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    return subprocess.Popen([sys.executable, "-c", BUILD, str(text_path), str(datafiles.path("llama2_tokenizer.model")),
                             str(cache), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_building_at_once_both_get_a_valid_cache(tmp_path, llama_sp):
    corpus = tmp_path / "words.txt"
    text = synthetic_corpus(corpus, 100_000)
    cache, go = tmp_path / "cache", tmp_path / "go"
    builders = [start_builder(corpus, cache, go) for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both have imported everything and wait at the barrier
    go.touch()
    results = []
    for proc in builders:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert all(r["built"] for r in results), "the builds did not overlap; the test proves nothing"
    assert results[0]["sha"] == results[1]["sha"]
    (path,) = cache.glob("*.tokens")
    tokens = TokenFile.open(path)
    assert tokens.tokens.tolist() == [1] + llama_sp.encode(text)
    assert not list(cache.glob(".*.tmp"))


def test_a_build_killed_midway_leaves_nothing_that_is_used(tmp_path, llama, llama_sp):
    corpus = tmp_path / "words.txt"
    text = synthetic_corpus(corpus, 200_000)
    cache, go = tmp_path / "cache", tmp_path / "go"
    go.touch()
    proc = start_builder(corpus, cache, go)
    deadline = time.monotonic() + 60
    while not list(cache.glob(".*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # well inside the encoding, which takes about half a second
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert list(cache.glob(".*.tmp")), "the build finished before the kill; the test proves nothing"
    assert not list(cache.glob("*.tokens")) and not list(cache.glob("*.json"))  # killed mid-tokenizing
    tokens = tokenize_file(corpus, llama, cache)  # rebuilds, and removes the dead build's leftovers
    assert tokens.tokens.tolist() == [1] + llama_sp.encode(text)
    assert not list(cache.glob(".*.tmp"))


# ------------------------------------------------------------------ batches


def test_batch_sampler_windows_come_from_its_own_seeded_generator():
    tokens = np.random.default_rng(0).permutation(1000).astype(np.uint16)
    sampler = BatchSampler(tokens, seq_len=16, batch_size=8, seed=1234)
    reference = torch.Generator().manual_seed(1234)
    torch.manual_seed(0)  # the global generator plays no part
    for _ in range(5):
        x, y = sampler.next()
        torch.rand(3)
        starts = torch.randint(0, 1000 - 16, (8,), generator=reference).tolist()
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (8, 16)
        assert x.tolist() == [tokens[s:s + 16].tolist() for s in starts]
        assert y.tolist() == [tokens[s + 1:s + 17].tolist() for s in starts]
    assert sampler.batches == 5
    assert not torch.equal(BatchSampler(tokens, 16, 8, seed=1).next()[0], BatchSampler(tokens, 16, 8, seed=2).next()[0])


def test_batch_sampler_reaches_both_ends_of_the_split():
    tokens = np.arange(13, dtype=np.uint16)  # seq_len 10: starts 0, 1 and 2
    sampler = BatchSampler(tokens, seq_len=10, batch_size=4, seed=0)
    starts = {int(s) for _ in range(50) for s in sampler.next()[0][:, 0]}
    assert starts == {0, 1, 2}


def test_batch_sampler_resumes_exactly_through_torch_save(tmp_path, llama):
    corpus = tmp_path / "t.txt"
    corpus.write_text("It was the best of times, it was the worst of times. " * 200)
    split = tokenize_file(corpus, llama, tmp_path).train
    sampler = BatchSampler(split, 32, 4, seed=7)
    assert np.shares_memory(sampler.tokens, split)  # reads windows from the memmap, copies nothing
    for _ in range(3):
        sampler.next()
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    expected = [sampler.next() for _ in range(4)]
    resumed = BatchSampler(split, 32, 4, seed=999)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert resumed.batches == 3
    for x, y in expected:
        rx, ry = resumed.next()
        assert torch.equal(x, rx) and torch.equal(y, ry)
    with pytest.raises(ValueError, match="'generator' and 'batches'"):
        resumed.load_state_dict({"batches": 1})


def test_eval_windows_are_fixed_consecutive_and_non_overlapping():
    tokens = np.arange(103, dtype=np.uint16)
    batches = list(eval_windows(tokens, seq_len=10, batch_size=4))  # 10 windows: 2 full batches
    assert len(batches) == 2
    for b, (x, y) in enumerate(batches):
        assert x.dtype == torch.int64 and x.shape == (4, 10)
        for i in range(4):
            start = (b * 4 + i) * 10
            assert x[i].tolist() == list(range(start, start + 10))
            assert y[i].tolist() == list(range(start + 1, start + 11))
    again = list(eval_windows(tokens, 10, 4))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert len(list(eval_windows(tokens, 10, 4, n_batches=1))) == 1
    with pytest.raises(ValueError, match="Ask for 1 to 2 batches"):
        eval_windows(tokens, 10, 4, n_batches=3)  # raised at the call, before any iteration
    (x, _), = eval_windows(np.arange(25), 10, 4)  # 2 windows: one batch of 2
    assert x.tolist() == [list(range(10)), list(range(10, 20))]


def test_a_split_shorter_than_a_window_is_a_clear_error():
    with pytest.raises(CorpusTooShortError, match=r"the training split has 10 tokens, .* needs 11 .* at most 9"):
        BatchSampler(np.arange(10), seq_len=10, batch_size=2, seed=0)
    with pytest.raises(CorpusTooShortError, match="the validation split has 5 tokens"):
        eval_windows(np.arange(5), seq_len=8, batch_size=2)
    with pytest.raises(ValueError, match="at least 1"):
        BatchSampler(np.arange(100), seq_len=0, batch_size=2, seed=0)
