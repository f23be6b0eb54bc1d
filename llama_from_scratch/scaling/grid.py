"""The IsoFLOP grid: a ladder of tiny LLaMA shapes and, for each compute budget, the sizes it trains.

An IsoFLOP design (Hoffmann et al. 2022, approach 2) trains several model sizes at each of a few
fixed compute budgets C, each for D = C / (6 N) tokens, so that every budget traces a curve of
loss against N whose minimum is that budget's compute-optimal size. N is the number of
non-embedding parameters (every weight but the token-embedding table; our output matrix is untied
and counted), as in Kaplan et al. 2020; 6 N D is the budget convention, and `flops_exact` in a
sweep's records adds what 6N leaves out (attention over the 128-token context, chapter 8).

The ladder grows about 2x a rung, 15K to 3.2M non-embedding parameters, in width and depth
together. Each budget trains `per_budget` consecutive rungs around Chinchilla's rule of thumb
(about 20 tokens a parameter, N ~ sqrt(C / 120); a pilot at 1e11 and 1e12 FLOPs put the minimum
there), the extra rung of an even count above it, dropping any rung that would take fewer than
`MIN_STEPS` optimizer steps; fewer than 3 rungs left is an error (no parabola fits 2 points).

Chapter: scaling_laws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.scaling.errors import ScalingError
from llama_from_scratch.training.ablation_params import parameter_counts

VOCAB_SIZE = 512  # a BPE this small keeps the output matrix from dominating the smallest rungs
SEQ_LEN = 128
BATCH_SIZE = 16  # sequences per step: 2,048 tokens
MIN_STEPS = 32
DEFAULT_BUDGETS = (1e11, 3e11, 1e12, 3e12)

# (dim, n_layers, n_heads, n_kv_heads): head size 16 to 64 wide, 32 after; 1 or 2 key/value heads.
LADDER: tuple[tuple[int, int, int, int], ...] = (
    (16, 2, 1, 1), (24, 2, 2, 1), (32, 3, 2, 1), (48, 3, 3, 1), (64, 4, 4, 2),
    (96, 4, 6, 2), (128, 5, 4, 2), (160, 6, 5, 1), (192, 8, 6, 2),
)


def rung_args(rung: tuple[int, int, int, int]) -> ModelArgs:
    """The `ModelArgs` of one ladder rung (Meta's SwiGLU size rule, rounded up to 32, as `--preset tiny`)."""
    dim, n_layers, n_heads, n_kv_heads = rung
    return ModelArgs(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads,
                     vocab_size=VOCAB_SIZE, multiple_of=32, max_seq_len=SEQ_LEN)


def non_embedding_params(args: ModelArgs) -> int:
    """N: every parameter but the token-embedding table (the untied output matrix is in it)."""
    return parameter_counts(args)["non_embedding"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of the sweep: a budget, a model, and the whole steps that spend the budget."""

    budget: float  # the nominal C this run belongs to
    args: ModelArgs
    params: int  # N, non-embedding
    steps: int

    @property
    def tokens(self) -> int:
        return self.steps * BATCH_SIZE * SEQ_LEN

    @property
    def flops(self) -> float:
        """6 N D with the D actually trained (whole steps: within half a step of the budget)."""
        return 6.0 * self.params * self.tokens

    @property
    def name(self) -> str:
        a = self.args
        return f"C{self.budget:.0e}-d{a.dim}-L{a.n_layers}"


def parse_budgets(text: str) -> tuple[float, ...]:
    """`"1e11,3e11"` -> (1e11, 3e11), sorted; ScalingError for anything but positive numbers."""
    try:
        budgets = tuple(sorted(float(b) for b in text.split(",") if b.strip()))
    except ValueError:
        raise ScalingError(f"--budgets {text!r}: give comma-separated FLOP counts, e.g. 1e11,3e11,1e12") from None
    if not budgets or not all(math.isfinite(b) and b > 0 for b in budgets):
        raise ScalingError(f"--budgets {text!r}: every budget must be a positive number of FLOPs")
    if len(set(budgets)) != len(budgets):
        raise ScalingError(f"--budgets {text!r} names a budget twice")
    return budgets


def plan(budgets: tuple[float, ...] | list[float], per_budget: int = 6,
         ladder: tuple[tuple[int, int, int, int], ...] = LADDER) -> list[PlannedRun]:
    """The runs of an IsoFLOP sweep, cheapest budget first (a killed sweep has the small ones).

    Raises ScalingError when a budget leaves fewer than 3 sizes with at least MIN_STEPS steps.
    """
    if per_budget < 3:
        raise ScalingError("per_budget must be at least 3 (a parabola needs 3 points), got "
                           f"{per_budget}")
    sizes = [(rung_args(r), non_embedding_params(rung_args(r))) for r in ladder]
    runs = []
    for budget in sorted(budgets):
        guess = math.sqrt(budget / 120)  # Chinchilla's D = 20 N: C = 6 N (20 N)
        centre = min(range(len(sizes)), key=lambda i: abs(math.log(sizes[i][1] / guess)))
        first = max(0, min(centre - (per_budget - 1) // 2, len(sizes) - per_budget))
        chosen = []
        for args, n in sizes[first:first + per_budget]:
            steps = round(budget / (6 * n * BATCH_SIZE * SEQ_LEN))
            if steps >= MIN_STEPS:
                chosen.append(PlannedRun(budget, args, n, steps))
        if len(chosen) < 3:
            # the third rung's shortest run
            need = 6 * sizes[2][1] * MIN_STEPS * BATCH_SIZE * SEQ_LEN
            raise ScalingError(f"budget {budget:.3g} FLOPs is too small for this grid: fewer "
                               f"than 3 model sizes get {MIN_STEPS} steps of "
                               f"{BATCH_SIZE * SEQ_LEN} tokens; use budgets of at least about "
                               f"{need:.1g} FLOPs")
        runs += chosen
    return runs
