"""What LLaMA 2's pretraining cost, how far past compute-optimal it went, and why that was right.

Cost: Touvron et al. 2023 ("Llama 2"), Table 2, reports A100-80GB GPU-hours for pretraining each
size on 2.0T tokens. With C = 6 N D (N all parameters, D tokens) and the A100's dense bf16 peak
of 312 TFLOP/s, the hours imply a utilisation (MFU) of about 40%: `implied_utilisation`. The 6N
rule leaves out attention and counts the embedding table as if it were a matmul; counting every
matmul and attention at 4,096 tokens of context (`exact_training_flops`) gives 3.5% (70B) to 6%
(7B) more. Not handled: hours spent on restarts, evaluation or failed runs, which the reported
totals may include.

Serving: a model is trained once and then run on every token it serves, 2 N FLOPs per token
(a forward pass; attention and the KV cache left out). Over a deployment's lifetime the cost is
6 N D_train + 2 N D_inference (`lifetime_flops`), and the cheapest model that reaches a given
loss moves to a smaller N and a larger D than compute-optimal (`smallest_for_loss`): the reason
LLaMA 2 trained 7B on 2T tokens, about 300 tokens per parameter, where Chinchilla's rule of thumb
says 20.

Chapter: scaling_laws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_from_scratch.model.config import ModelArgs, preset
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.scaling.laws import Law, compute_optimal, golden_minimum
from llama_from_scratch.training.flops import flops_per_token

A100_BF16 = 312e12  # FLOP/s: NVIDIA's dense bf16 tensor-core peak (624e12 is with 2:4 sparsity)


@dataclass(frozen=True)
class Pretraining:
    """One LLaMA 2 size: parameters, training tokens, reported A100-80GB GPU-hours and, if
    released, the name of our preset with its shape (`model.config.PRESETS`)."""

    name: str
    params: float
    tokens: float
    gpu_hours: float
    preset: str | None


# Touvron et al. 2023, Table 2. Parameters: the exact count of our model at vocab 32,000
# (count_parameters(preset(name, vocab_size=32000)); the tests recompute them). 34B was never
# released, so its shape is unknown: the nominal 34e9.
LLAMA2_PRETRAINING = {
    "7B": Pretraining("7B", 6_738_415_616, 2.0e12, 184_320, "7B"),
    "13B": Pretraining("13B", 13_015_864_320, 2.0e12, 368_640, "13B"),
    "34B": Pretraining("34B", 34e9, 2.0e12, 1_038_336, None),
    "70B": Pretraining("70B", 68_976_648_192, 2.0e12, 1_720_320, "70B"),
}


def _positive(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value) or value <= 0:
            raise ScalingError(f"{name} must be a positive finite number, got {value}")


def training_flops(params: float, tokens: float) -> float:
    """C = 6 N D: forward (2N per token) plus backward (4N), attention left out."""
    _positive(params=params, tokens=tokens)
    return 6.0 * params * tokens


def gpu_hours(params: float, tokens: float, utilisation: float, peak: float = A100_BF16) -> float:
    """Hours of GPUs running at `utilisation` (a fraction) of `peak` FLOP/s to do 6 N D FLOPs."""
    _positive(utilisation=utilisation, peak=peak)
    return training_flops(params, tokens) / (utilisation * peak) / 3600.0


def implied_utilisation(params: float, tokens: float, gpu_hours: float,
                        peak: float = A100_BF16) -> float:
    """The fraction of `peak` that 6 N D FLOPs in `gpu_hours` hours implies (MFU)."""
    _positive(gpu_hours=gpu_hours, peak=peak)
    return training_flops(params, tokens) / (gpu_hours * 3600.0 * peak)


def exact_training_flops(args: ModelArgs, tokens: float, seq_len: int = 4096) -> float:
    """Training FLOPs of `tokens` tokens at context `seq_len`, every matmul and attention counted.

    Uses `flops_per_token(...)["train_causal"]`: query i scores i + 1 keys. LLaMA's causal
    attention kernel (xformers, Touvron et al. 2023a, section 2.4) skips the masked scores, so
    the causal count is the work done; `train_full` would add the masked half as well.
    """
    _positive(tokens=tokens)
    return float(flops_per_token(args, seq_len)["train_causal"]) * tokens


def llama2_costs(peak: float = A100_BF16, seq_len: int = 4096) -> list[dict]:
    """One row per LLaMA 2 size: name, params, tokens, gpu_hours, flops (6ND), utilisation; for
    the released sizes also exact_flops (`exact_training_flops`) and exact_utilisation."""
    rows = []
    for run in LLAMA2_PRETRAINING.values():
        row = {"name": run.name, "params": run.params, "tokens": run.tokens,
               "gpu_hours": run.gpu_hours, "flops": training_flops(run.params, run.tokens),
               "utilisation": implied_utilisation(run.params, run.tokens, run.gpu_hours, peak)}
        if run.preset is not None:
            exact = exact_training_flops(preset(run.preset, vocab_size=32000), run.tokens, seq_len)
            row["exact_flops"] = exact
            row["exact_utilisation"] = exact / (run.gpu_hours * 3600.0 * peak)
        rows.append(row)
    return rows


def tokens_per_parameter(params: float, tokens: float) -> float:
    """D / N: about 20 at Chinchilla's compute-optimal point, about 300 for LLaMA 2 7B."""
    _positive(params=params, tokens=tokens)
    return tokens / params


def overtraining(law: Law, params: float, tokens: float) -> dict[str, float]:
    """How a model of `params` trained on `tokens` sits against `law`'s compute-optimal model
    for the same budget: flops (6ND), params_opt, tokens_opt, params_ratio (N / N_opt),
    tokens_ratio (D / D_opt), loss (L(N, D)), loss_opt (L(N_opt, D_opt), never larger), and
    tokens_per_parameter."""
    flops = training_flops(params, tokens)
    n_opt, d_opt = compute_optimal(law, flops)
    return {"flops": flops, "params_opt": n_opt, "tokens_opt": d_opt,
            "params_ratio": params / n_opt, "tokens_ratio": tokens / d_opt,
            "loss": law.loss(params, tokens), "loss_opt": law.loss(n_opt, d_opt),
            "tokens_per_parameter": tokens / params}


def lifetime_flops(params: float, train_tokens: float, inference_tokens: float) -> float:
    """6 N D_train + 2 N D_inference: training once, then a forward pass per token served."""
    _positive(params=params, train_tokens=train_tokens)
    if not math.isfinite(inference_tokens) or inference_tokens < 0:
        raise ScalingError(f"inference_tokens must be finite and >= 0, got {inference_tokens}")
    return 6.0 * params * train_tokens + 2.0 * params * inference_tokens


def smallest_for_loss(law: Law, loss: float,
                      inference_tokens: float = 0.0) -> tuple[float, float]:
    """(N, D) reaching `loss` under `law` with the fewest lifetime FLOPs (`lifetime_flops`).

    Every (N, D) on the iso-loss curve splits the reducible loss r = loss - E into a share s
    from the size term, A / N^alpha = s r, and 1 - s from the data term,
    B / D^beta = (1 - s) r. The search runs over logit(s) (`golden_minimum`), in logs
    throughout: as serving grows the optimum crowds towards s = 1 (the smallest N that can
    reach the loss at all, with D without bound). With no inference the optimum is the
    compute-optimal model for the budget that reaches `loss`.
    """
    if not math.isfinite(loss) or loss <= law.E:
        raise ScalingError(f"loss {loss} is not above law {law.name or '?'}'s irreducible "
                           f"loss E = {law.E}: no finite model reaches it; ask for a loss "
                           "above E")
    lifetime_flops(1.0, 1.0, inference_tokens)  # validates inference_tokens
    log_r = math.log(loss - law.E)

    def log_sizes(t: float) -> tuple[float, float]:
        log_s = -math.log1p(math.exp(-t)) if t > 0 else t - math.log1p(math.exp(t))
        log_1ms = log_s - t  # log(1 - s) = log s - logit(s), without cancellation
        return ((math.log(law.A) - log_s - log_r) / law.alpha,
                (math.log(law.B) - log_1ms - log_r) / law.beta)

    def log_cost(t: float) -> float:
        log_n, log_d = log_sizes(t)
        train = math.log(6.0) + log_n + log_d
        if inference_tokens == 0:
            return train
        serve = math.log(2.0 * inference_tokens) + log_n
        return max(train, serve) + math.log1p(math.exp(-abs(train - serve)))

    s0 = law.beta / (law.alpha + law.beta)  # the compute-optimal share (A/N^a = b/a * B/D^b)
    t = golden_minimum(log_cost, math.log(s0 / (1.0 - s0)) - 2.0, 40.0, grid=841)
    log_n, log_d = log_sizes(t)
    return math.exp(log_n), math.exp(log_d)
