"""`python -m llama_from_scratch generate`: stdout holds only the result, stderr the rest."""

import os
import subprocess
import sys

import pytest

from llama_from_scratch import datafiles
from llama_from_scratch.checkpoints.llama2c import load_bin
from llama_from_scratch.cli.main import main
from llama_from_scratch.inference.generation import generate
from llama_from_scratch.tokenizer.llama2c import Llama2cTokenizer

CKPT = str(datafiles.path("stories260K/stories260K.bin"))
TOK = str(datafiles.path("stories260K/tok512.bin"))
STOP = [1, 2]  # tok512's EOS and BOS: Llama2cTokenizer.stop_ids


@pytest.fixture(scope="module")
def stories():
    return load_bin(CKPT)


def run_cli(*args):
    env = {**os.environ, "LLAMA_DATA_DIR": str(datafiles.data_dir())}
    return subprocess.run([sys.executable, "-m", "llama_from_scratch", "generate", "--checkpoint", CKPT, *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_text_output_is_only_the_continuation(stories):
    prompt = "Once upon a time, Tom"
    tok = Llama2cTokenizer.from_file(TOK)
    ids = tok.encode(prompt, bos=True)
    assert ids[0] == 1
    want = generate(stories, [ids], 40, temperature=0.0, stop_ids=STOP)[0]
    proc = run_cli("--tokenizer", TOK, "--prompt", prompt, "--max-new-tokens", "40", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tok.decode_continuation(want, ids[-1]) + "\n"
    assert prompt not in proc.stdout and len(proc.stdout.split()) > 10
    assert "loaded" in proc.stderr and "loaded" not in proc.stdout


def test_print_ids_with_prompt_ids(stories):
    want = generate(stories, [[1, 403, 407]], 25, temperature=0.8, top_k=20, top_p=0.95, seed=7, stop_ids=STOP)[0]
    proc = run_cli("--prompt-ids", "1 403 407", "--print-ids", "--max-new-tokens", "25",
                   "--temperature", "0.8", "--top-k", "20", "--top-p", "0.95", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == " ".join(map(str, want)) + "\n"


def test_defaults_bos_prompt_meta_sampling_fixed_seed(stories, capsys):
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", "--max-new-tokens", "30"]) == 0
    first = capsys.readouterr().out
    want = generate(stories, [[1]], 30, temperature=0.6, top_p=0.9, seed=1, stop_ids=STOP)[0]
    assert first == " ".join(map(str, want)) + "\n"
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", "--max-new-tokens", "30"]) == 0
    assert capsys.readouterr().out == first


def test_prompt_text_is_encoded_with_bos(stories, capsys):
    tok = Llama2cTokenizer.from_file(TOK)
    ids = tok.encode("Lily saw a cat", bos=True)
    assert main(["generate", "--checkpoint", CKPT, "--tokenizer", TOK, "--prompt", "Lily saw a cat",
                 "--print-ids", "--temperature", "0", "--max-new-tokens", "20"]) == 0
    want = generate(stories, [ids], 20, temperature=0.0, stop_ids=STOP)[0]
    assert capsys.readouterr().out == " ".join(map(str, want)) + "\n"


def test_default_tokenizer_is_tokenizer_model_beside_the_checkpoint(tmp_path, capsys):
    (tmp_path / "model.bin").symlink_to(CKPT)
    assert main(["generate", "--checkpoint", str(tmp_path / "model.bin"), "--max-new-tokens", "5"]) == 2
    err = capsys.readouterr().err
    assert "tokenizer.model" in err and "--tokenizer" in err
    (tmp_path / "tokenizer.model").symlink_to(TOK)  # content decides the format: llama2.c's here
    assert main(["generate", "--checkpoint", str(tmp_path / "model.bin"), "--max-new-tokens", "20",
                 "--temperature", "0"]) == 0
    assert len(capsys.readouterr().out.split()) > 3


def test_context_length_note(stories, capsys):
    prompt = [1] + [300] * 504  # 505 of 512 positions
    want = generate(stories, [prompt], 100, temperature=0.0, stop_ids=STOP)[0]
    assert len(want) == 7
    assert main(["generate", "--checkpoint", CKPT, "--prompt-ids", " ".join(map(str, prompt)),
                 "--print-ids", "--temperature", "0", "--max-new-tokens", "100"]) == 0
    out = capsys.readouterr()
    assert out.out == " ".join(map(str, want)) + "\n"
    assert "context length of 512" in out.err


@pytest.mark.parametrize("args, words", [
    (["--prompt", "hi", "--prompt-ids", "1 2"], "not both"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "0"], "top_p"),
    (["--top-p", "1.5"], "top_p"),
    (["--top-k", "0"], "top_k"),
    (["--prompt-ids", "1 x"], "integers"),
    (["--prompt-ids", "1 600"], "0..511"),
    (["--prompt-ids", " ".join(["1"] * 513)], "context length of 512"),
    (["--tokenizer", CKPT, "--prompt", "hi"], "neither"),
])
def test_bad_input_is_one_line_on_stderr(args, words, capsys):
    assert main(["generate", "--checkpoint", CKPT, "--print-ids", *args]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("error:") or "loaded" in out.err
    assert words in out.err


def test_bad_checkpoint_subprocess(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(open(CKPT, "rb").read()[:1000])
    proc = run_cli("--checkpoint", str(bad), "--print-ids")  # the later --checkpoint wins
    assert proc.returncode == 2 and proc.stdout == ""
    assert "1,000 bytes" in proc.stderr and "dim=64" in proc.stderr


# Without a tokenizer, the checkpoint names the stop ids (and the default prompt's BOS), or nobody does.

def test_read_special_ids_of_each_format(tmp_path, stories):
    import json

    from llama_from_scratch.checkpoints import hf_writer, meta_format
    from llama_from_scratch.checkpoints.errors import CheckpointError
    from llama_from_scratch.checkpoints.load import read_special_ids

    assert read_special_ids(CKPT) == (1, (2,))  # llama2.c: fixed by run.c
    meta_format.save_meta(stories, tmp_path / "meta")
    assert read_special_ids(tmp_path / "meta") is None  # params.json names no token ids
    hf_writer.save_hf(stories, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    for bos, eos, want in [(1, 2, (1, (2,))), (None, [7, 9], (None, (7, 9))), (None, None, None), ("1", 2, "error")]:
        config_path.write_text(json.dumps({**config, "bos_token_id": bos, "eos_token_id": eos}))
        if want == "error":
            with pytest.raises(CheckpointError, match="bos_token_id '1'"):
                read_special_ids(tmp_path / "hf")
        else:
            assert read_special_ids(tmp_path / "hf") == want
    rest = {k: v for k, v in config.items() if k not in ("bos_token_id", "eos_token_id")}
    config_path.write_text(json.dumps(rest))
    assert read_special_ids(tmp_path / "hf") == (1, (2,))  # LlamaConfig's defaults, as transformers reads it


@pytest.mark.parametrize("eos", [432, [286, 2]])
def test_hf_config_eos_stops_print_ids_without_a_tokenizer(tmp_path, stories, eos, capsys):
    import json

    from llama_from_scratch.checkpoints import hf_writer

    greedy = generate(stories, [[1, 403]], 12, temperature=0.0)[0]
    assert greedy[:6] == [407, 261, 378, 432, 383, 286] and 1 not in greedy and 2 not in greedy
    hf_writer.save_hf(stories, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "eos_token_id": eos}))
    assert main(["generate", "--checkpoint", str(tmp_path), "--device", "cpu", "--prompt-ids", "1 403",
                 "--print-ids", "--temperature", "0", "--max-new-tokens", "12"]) == 0
    first_stop = 432 if eos == 432 else 286
    assert capsys.readouterr().out == " ".join(map(str, greedy[:greedy.index(first_stop)])) + "\n"
    assert main(["generate", "--checkpoint", str(tmp_path), "--device", "cpu", "--print-ids",
                 "--temperature", "0", "--max-new-tokens", "12"]) == 0  # default prompt: config's BOS
    want = generate(stories, [[1]], 12, temperature=0.0, stop_ids=[first_stop, 1])[0]
    assert capsys.readouterr().out == " ".join(map(str, want)) + "\n"


def test_meta_directory_without_tokenizer_never_stops_early(tmp_path, stories, capsys):
    from llama_from_scratch.checkpoints import meta_format

    meta_format.save_meta(stories, tmp_path)
    sampled = dict(temperature=0.8, top_p=0.9, seed=0)
    full = generate(stories, [[1]], 300, **sampled)[0]  # no stop ids: on into the next story
    assert 1 in full[:-1]  # this seed's first story ends (BOS) well within 300 tokens
    assert main(["generate", "--checkpoint", str(tmp_path), "--device", "cpu", "--prompt-ids", "1",
                 "--print-ids", "--max-new-tokens", "300", "--temperature", "0.8", "--seed", "0"]) == 0
    assert capsys.readouterr().out == " ".join(map(str, full)) + "\n"
    # No BOS known for the default prompt: a clear error asking for --prompt-ids.
    assert main(["generate", "--checkpoint", str(tmp_path), "--print-ids", "--max-new-tokens", "5"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "--prompt-ids" in out.err and "no BOS id" in out.err
    # A tokenizer beside it decides: tok512 stops the same draws at the story's end.
    (tmp_path / "tokenizer.model").symlink_to(TOK)
    assert main(["generate", "--checkpoint", str(tmp_path), "--device", "cpu", "--print-ids",
                 "--max-new-tokens", "300", "--temperature", "0.8", "--seed", "0"]) == 0
    assert capsys.readouterr().out == " ".join(map(str, full[:full.index(1)])) + "\n"
