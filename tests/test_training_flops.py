"""FLOPs per token against PyTorch's own FlopCounterMode on real forward and backward passes, and
against LLaMA 2's published parameter counts; the matmul peak and MFU arithmetic."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from llama_from_scratch.model.config import PRESETS, ModelArgs, preset
from llama_from_scratch.model.parameters import count_parameters
from llama_from_scratch.model.transformer import Transformer
from llama_from_scratch.training.ablation_model import AblationModel, ablation_args
from llama_from_scratch.training.flops import flops_per_token, measure_matmul_peak, mfu

TINY_SHAPES = {
    "gqa": preset("tiny"),
    "mha": preset("tiny-mha"),
    "tied-172": preset("stories260K"),  # tied output matrix, hidden size not a multiple of anything
    "mqa": ModelArgs(dim=48, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=61, multiple_of=16,
                     max_seq_len=64),
}


def _model(name):
    if name == "gpt2-block":  # GELU MLP (two matrices), biases (addmm), learned positions
        return AblationModel(ablation_args(preset("tiny"), "gpt2"))
    return Transformer(TINY_SHAPES[name])


def _count(model, tokens, backward=False):
    with FlopCounterMode(display=False) as counter:
        logits = model(tokens)
        if backward:
            logits.sum().backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", [*TINY_SHAPES, "gpt2-block"])
@pytest.mark.parametrize("seq", [1, 17, 64])
def test_formula_equals_flop_counter_on_a_real_model(name, seq):
    model = _model(name)
    batch = 3
    tokens = torch.randint(0, model.args.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))
    f = flops_per_token(model.args, seq)
    # The explicit attention path is plain matmuls over all T keys (masked ones too): "full".
    model.set_attention_path(False)
    assert _count(model, tokens) == f["forward_full"] * batch * seq
    assert _count(model, tokens, backward=True) == f["train_full"] * batch * seq  # backward = 2x
    # PyTorch's counter has no formula for the CPU's fused attention kernel: only the weights show.
    model.set_attention_path(True)
    assert _count(model, tokens) == f["matmul"] * batch * seq


def test_causal_count_is_the_average_over_positions():
    args, seq = preset("tiny"), 37
    f = flops_per_token(args, seq)
    per_position = [args.n_layers * 2 * 2 * args.dim * (i + 1) for i in range(seq)]  # i + 1 keys
    assert f["attention_causal"] * seq == sum(per_position)
    assert f["attention_full"] == args.n_layers * 4 * args.dim * seq


# LLaMA 2's parameter counts (the published checkpoints' tensors, summed).
PUBLISHED = {"7B": 6_738_415_616, "13B": 13_015_864_320, "70B": 68_976_648_192}


@pytest.mark.parametrize("name", PUBLISHED)
def test_llama2_at_4096_tokens(name):
    args, seq = PRESETS[name], 4096
    f = flops_per_token(args, seq)
    assert count_parameters(args) == PUBLISHED[name]
    n = PUBLISHED[name] - args.vocab_size * args.dim  # non-embedding: all but the embedding table
    assert f["non_embedding_params"] == n
    norms = (2 * args.n_layers + 1) * args.dim
    assert f["matmul"] == 2 * (n - norms)  # every matrix but the embedding, once per token
    # PaLM's 6N + 12 L T d is our full training count, up to the norms' few weights in N.
    assert f["train_full"] == f["palm"] - 6 * norms
    assert f["train_causal"] == f["kaplan"] - 6 * norms + 6 * args.n_layers * args.dim
    share = 12 * args.n_layers * seq * args.dim / f["train_full"]
    assert 0.05 < share < 0.16  # attention: 14% of 7B's training FLOPs at 4k, 7% of 70B's
    assert f["six_n"] < f["train_causal"] < f["train_full"]
    assert f["train_full"] / f["six_n"] == pytest.approx(1 + share / (1 - share), rel=1e-4)


def test_llama2_7b_numbers():
    f = flops_per_token(PRESETS["7B"], 4096)
    assert f["forward_full"] == 2 * 6_607_077_376 + 4 * 32 * 4096 * 4096  # 15.36 GFLOP per token
    assert f["train_full"] == pytest.approx(46.08e9, rel=1e-3)
    assert f["six_n"] == pytest.approx(39.64e9, rel=1e-3)


def test_gqa_has_fewer_projection_flops_than_mha():
    gqa, mha = flops_per_token(PRESETS["70B"], 16), flops_per_token(
        ablation_args(PRESETS["70B"], n_kv_heads=None), 16)
    d = 8192
    assert mha["attention_projections"] - gqa["attention_projections"] == 2 * 80 * 2 * d * (d - 1024)
    assert mha["attention_full"] == gqa["attention_full"]  # scores use every query head either way


def test_bad_seq_len():
    with pytest.raises(ValueError, match="seq_len must be a positive"):
        flops_per_token(preset("tiny"), 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matmul_peak_is_a_positive_finite_rate(dtype):
    peak = measure_matmul_peak(dtype, size=128, seconds=0.05, runs=2)
    assert math.isfinite(peak) and peak > 0


def test_mfu_arithmetic_and_errors():
    assert mfu(1000.0, 6e6, 1.2e10) == pytest.approx(0.5)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive finite"):
            mfu(bad, 6e6, 1e10)
    with pytest.raises(ValueError, match="peak"):
        mfu(1.0, 1.0, 0.0)
