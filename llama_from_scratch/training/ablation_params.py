"""Equal parameters for ablations: count a variant's parameters, and resize its MLP to match another.

An ablation that swaps SwiGLU for GELU, drops grouped-query attention or adds biases also changes
the parameter count, and a bigger model wins for being bigger. `match_parameters` picks the MLP
hidden size that gives a variant the non-embedding parameter count of a reference (LLaMA's
block, usually), so the comparison is at equal parameters; train both on the same tokens.

"Non-embedding" (as in Kaplan et al. 2020) leaves out the token-embedding table and the learned
position table: lookups, not matmuls, whose size follows the vocabulary and the context rather
than the model's capacity. An untied output matrix is counted (it is a matmul every token pays
for); a tied one is the embedding, left out. Matching is exact to within one hidden unit, i.e.
`n_layers * ffn_matrices * dim` parameters (plus biases): far inside 1% for any model we train.
Not handled: matching total parameters (the position table would have to be paid for in the MLP).

Chapter: pretraining.
"""

from __future__ import annotations

from dataclasses import replace

from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.training.ablation_model import AblationArgs, AblationModel, ablation_args


def parameter_counts(args: ModelArgs) -> dict[str, int]:
    """`{"total", "embedding", "non_embedding"}` for the `AblationModel` of `args` (a plain
    `ModelArgs` counts as LLaMA's block), built on the meta device: no memory allocated."""
    if not isinstance(args, AblationArgs):
        args = ablation_args(args, "llama")
    model = empty_model(args, AblationModel)
    total = sum(p.numel() for p in model.parameters())  # a tied output matrix once
    embedding = model.tok_embeddings.weight.numel()
    if model.pos_embeddings is not None:
        embedding += model.pos_embeddings.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def match_parameters(args: AblationArgs, reference: ModelArgs) -> AblationArgs:
    """`args` with `hidden_dim` chosen so its non-embedding parameters equal `reference`'s as
    closely as a whole hidden size allows. The count is linear in the hidden size, so two counts
    give the slope and the intercept; no formula per switch that could drift from the model."""
    target = parameter_counts(reference)["non_embedding"]
    at_1 = parameter_counts(replace(args, hidden_dim=1))["non_embedding"]
    at_2 = parameter_counts(replace(args, hidden_dim=2))["non_embedding"]
    per_unit = at_2 - at_1  # parameters per hidden unit, all layers
    hidden = 1 + round((target - at_1) / per_unit)
    if hidden < 1:
        raise ValueError(f"cannot match {target:,} non-embedding parameters: without its MLP this "
                         f"variant already has {at_1 - per_unit:,}; give the reference a larger MLP")
    return replace(args, hidden_dim=hidden)
