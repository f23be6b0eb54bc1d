"""FLOPs per token, derived from the model's shapes, and model FLOPs utilisation (MFU).

A matmul of an `(m, k)` by a `(k, n)` matrix costs 2mkn FLOPs (a multiply and an add per term).
Per token, the forward pass of our decoder multiplies by every weight matrix once:

    attention projections  2 L (2 d^2 + 2 d kv_dim)   q and o are d x d; k, v are d x kv_dim,
                                                      kv_dim = n_kv_heads * head_dim (GQA: smaller)
    feed-forward           2 L m d h                  m = 3 matrices for SwiGLU (2 for GELU), h hidden
    output                 2 d V                      at every position (training scores them all)

plus attention itself, which has no weights: scores q.k and the weighted sum of values, each
2 d c FLOPs for a query that sees c keys (all heads together: n_heads * head_dim = d, whatever
n_kv_heads is). Two ways to count c, both reported:

* `full`: every query against all T positions, c = T (the masked half is computed and thrown
  away, as a plain matmul does): 4 L d T. PaLM's MFU (Chowdhery et al. 2022, appendix B) counts
  this, and 6N + 12 L d T is exactly our training count when N is the matmul parameters.
* `causal`: query i sees i + 1 keys, on average c = (T + 1) / 2: 2 L d (T + 1). Kaplan et al.
  2020 (table 1) count 2 L T d forward, i.e. this one to within the +1.

Training is 3x the forward: the backward pass of a matmul is two matmuls of the same size (the
gradient for the input and the one for the weight). 6N counts only the weights: N = the
non-embedding parameters (`ablation_params.parameter_counts`: all but the token-embedding and
position tables; an untied output matrix is in it), so 6N misses attention and, for tied
embeddings, the output matmul, and adds the norms' few weights. Not counted: elementwise work
(norms, RoPE, softmax, SiLU/GELU, residual adds, biases): a few percent on a CPU's clock, no
matmul FLOPs. `measure_matmul_peak` times float32/bfloat16 square matmuls on the CPU (not
handled: GPUs); `mfu` = achieved FLOP/s over that peak.

Chapter: pretraining (also shown in: scaling_laws).
"""

from __future__ import annotations

import math
import time

import torch

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.training.ablation_model import AblationArgs
from llama_from_scratch.training.ablation_params import parameter_counts


def flops_per_token(args: ModelArgs, seq_len: int) -> dict[str, int]:
    """FLOPs per token at context `seq_len` for `args` (`ModelArgs` or `AblationArgs`).

    Keys: `attention_projections`, `feed_forward`, `output`, `matmul` (their sum),
    `attention_full`, `attention_causal`, `forward_full` / `forward_causal` (matmul +
    attention), `train_full` / `train_causal` (3x forward), `non_embedding_params` (N),
    `six_n` (6N), `kaplan` (6N + 6 L T d), `palm` (6N + 12 L T d), `seq_len`. All are per
    token, forward or forward + backward as named.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive number of tokens, got {seq_len}")
    d, n_layers, vocab = args.dim, args.n_layers, args.vocab_size
    kv_dim = args.kv_heads * args.head_dim
    ffn_matrices = args.ffn_matrices if isinstance(args, AblationArgs) else 3
    out = {"seq_len": seq_len}
    out["attention_projections"] = 2 * n_layers * (2 * d * d + 2 * d * kv_dim)
    out["feed_forward"] = 2 * n_layers * ffn_matrices * d * args.ffn_hidden_dim
    out["output"] = 2 * d * vocab
    out["matmul"] = out["attention_projections"] + out["feed_forward"] + out["output"]
    out["attention_full"] = n_layers * 2 * (2 * d * seq_len)  # q.k and probs.v, T keys each
    # the mean of 2 * 2 d (i + 1) over i < T
    out["attention_causal"] = n_layers * 2 * d * (seq_len + 1)
    for kind in ("full", "causal"):
        out[f"forward_{kind}"] = out["matmul"] + out[f"attention_{kind}"]
        out[f"train_{kind}"] = 3 * out[f"forward_{kind}"]
    n = parameter_counts(args)["non_embedding"]
    out["non_embedding_params"] = n
    out["six_n"] = 6 * n
    out["kaplan"] = 6 * n + 6 * n_layers * seq_len * d
    out["palm"] = 6 * n + 12 * n_layers * seq_len * d
    return out


def measure_matmul_peak(dtype: torch.dtype = torch.float32, size: int = 1024, seconds: float = 1.0,
                        runs: int = 5) -> float:
    """This CPU's matmul speed in FLOP/s: the best of `runs` timed runs of `(size, size)` @
    `(size, size)` matmuls in `dtype`, about `seconds` in all, with the current thread count
    (`torch.get_num_threads()`). The best run, not the mean: the peak is what the hardware can
    do, and other processes only ever slow a run down. Timing varies between calls.
    """
    if size < 1 or seconds <= 0 or runs < 1:
        raise ValueError(f"need size >= 1, seconds > 0, runs >= 1; got {size}, {seconds}, {runs}")
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: thread pool, kernel choice
    start = time.perf_counter()
    torch.mm(a, b, out=out)
    one = max(time.perf_counter() - start, 1e-9)
    reps = max(1, int(seconds / runs / one))  # matmuls per run
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * size**3 / max(best, 1e-12)


def mfu(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: `tokens_per_second * flops_per_token / peak`, a fraction (0.4 = 40%).

    `flops_per_token` is the training count (e.g. `flops_per_token(...)["train_full"]`, PaLM's
    convention); `peak` in FLOP/s (`measure_matmul_peak`). Model FLOPs, not hardware FLOPs:
    recomputation would not count.
    """
    for name, value in (("tokens_per_second", tokens_per_second),
                        ("flops_per_token", flops_per_token), ("peak", peak)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {value}")
    return tokens_per_second * flops_per_token / peak
