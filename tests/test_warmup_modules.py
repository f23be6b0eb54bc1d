"""softmax and causal_mask against PyTorch's own operators."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llama_from_scratch.model.masks import additive_mask, causal_mask
from llama_from_scratch.model.softmax import naive_softmax, softmax


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_softmax_equals_torch_on_every_axis(dtype):
    x = (200 * torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))).to(dtype)
    for dim in range(-4, 4):
        torch.testing.assert_close(softmax(x, dim=dim), torch.softmax(x, dim=dim))


def test_naive_softmax_overflows_where_the_stable_one_does_not():
    big = torch.tensor([100.0, 90.0])
    assert torch.isnan(naive_softmax(big)).any()
    torch.testing.assert_close(softmax(big), torch.softmax(big, -1))
    torch.testing.assert_close(naive_softmax(big / 100), torch.softmax(big / 100, -1))


def test_softmax_with_masked_entries_matches_torch_including_fully_masked_rows():
    x = torch.tensor([[0.0, float("-inf"), 2.0], [float("-inf")] * 3])
    torch.testing.assert_close(softmax(x), torch.softmax(x, -1), equal_nan=True)


@pytest.mark.parametrize("q_len,kv_len", [(1, 1), (5, 5), (1, 7), (3, 8), (0, 4)])
def test_causal_mask_aligns_queries_to_the_end(q_len, kv_len):
    full = torch.ones(kv_len, kv_len, dtype=torch.bool).tril()
    assert torch.equal(causal_mask(q_len, kv_len), full[kv_len - q_len :])


def test_causal_mask_rejects_more_queries_than_keys():
    with pytest.raises(ValueError, match="q_len=5, kv_len=3"):
        causal_mask(5, 3)


@pytest.mark.parametrize("q_len,kv_len", [(6, 6), (2, 6), (1, 9)])
def test_masked_softmax_attention_equals_sdpa(q_len, kv_len):
    g = torch.Generator().manual_seed(q_len * 10 + kv_len)
    q = torch.randn(2, 3, q_len, 8, generator=g)
    k, v = torch.randn(2, 2, 3, kv_len, 8, generator=g)
    mask = causal_mask(q_len, kv_len)
    weights = softmax(q @ k.transpose(-2, -1) / math.sqrt(8) + additive_mask(mask))
    torch.testing.assert_close(weights @ v, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert additive_mask(mask).dtype == torch.float32 and additive_mask(mask)[~mask].eq(float("-inf")).all()
