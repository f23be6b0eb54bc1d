"""Put checkpoint tensors into a model without paying for the model twice.

The naive way, `model = Transformer(args); model.load_state_dict(torch.load(path))`, holds
three copies at its peak: random initial weights (float32!), the loaded state dict, and
the copy `load_state_dict` makes into the parameters. For LLaMA 2 7B in float16 that is
27 + 13.5 GB before the copy. Here instead:

1. the model is built on the **meta device**: parameters with shapes and dtypes but no
   memory (`empty_model`);
2. every key and shape of the checkpoint is checked against the model **before** any
   tensor is touched (`check_shapes`), so an error never leaves a half-loaded model;
3. each tensor, memory-mapped from the file, is **assigned** as the parameter
   (`put_tensor`): no copy when it already has the wanted device and dtype, one
   conversion otherwise, one tensor at a time (so a GPU load needs only the GPU's memory
   plus one tensor in flight);
4. `finish` re-ties a shared output matrix, recomputes RoPE's cos/sin tables on the
   device and checks that nothing is left on the meta device.

The model comes back in the state every loader gives: parameters that require grad
(ready to fine-tune) and eval mode; inference wraps itself in `torch.inference_mode()`.
A memory-mapped parameter is mapped privately (copy-on-write): training it writes into
this process's pages, never into the checkpoint file.

Not handled: quantised tensors, loading onto several devices.

Chapter: real_weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from llama_from_scratch.checkpoints.errors import CheckpointError
from llama_from_scratch.model.config import ModelArgs
from llama_from_scratch.model.parameters import empty_model
from llama_from_scratch.model.transformer import Transformer


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a model with these args -> its shape (no memory is allocated)."""
    return {k: tuple(v.shape) for k, v in empty_model(args).state_dict().items()}


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def check_shapes(found: Mapping[str, tuple[int, ...]], args: ModelArgs, where: str) -> None:
    """Raise `CheckpointError` unless `found` (our key names -> shapes) is exactly what a
    model with `args` needs. Lists missing and unexpected keys; names a key whose shape
    differs, with both shapes. A tied model may leave out output.weight.
    """
    want = expected_shapes(args)
    optional = {"output.weight"} if args.tie_embeddings else set()
    missing = sorted(set(want) - set(found) - optional)
    unexpected = sorted(set(found) - set(want))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    for key in sorted(set(want) & set(found)):
        if tuple(found[key]) != want[key]:
            problems.append(f"{key} has shape {tuple(found[key])} in the checkpoint but the model "
                            f"(from its config) needs {want[key]}")
            break  # one wrong shape usually means a wrong config: the first says enough
    if problems:
        raise CheckpointError(f"{where} does not match its config: " + "; ".join(problems)
                              + ". Nothing was loaded.")


def put_tensor(model: Transformer, name: str, tensor: torch.Tensor,
               device: torch.device | str | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Make `tensor` the parameter `name` (e.g. "layers.0.attention.wq.weight") of `model`,
    trainable (`requires_grad=True`), as `Transformer(args)` would have it.

    `.to()` returns the tensor itself when device and dtype already match: the parameter
    then *is* the memory-mapped tensor, nothing is copied.
    """
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    tensor = tensor.to(device=device, dtype=dtype)  # a no-op when nothing changes
    # detach: a view, no copy
    setattr(module, leaf, nn.Parameter(tensor.detach(), requires_grad=True))


def finish(model: Transformer, device: torch.device | str | None = None) -> Transformer:
    """Re-tie output to the embedding (if tied), recompute RoPE's cos/sin tables on `device`, check
    that no tensor is left on the meta device, and switch to eval mode."""
    args = model.args
    if args.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    if device is None:
        device = model.tok_embeddings.weight.device
    model.reset_rope_tables(device)  # the buffers were built on the meta device: real ones, float32
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]  # none: all assigned
    if left:
        raise CheckpointError(f"these tensors were never loaded: {_listing(left)}")
    return model.eval()


def load_state_dict_into(args: ModelArgs, state_dict: Mapping[str, torch.Tensor], where: str,
                         device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                         progress: bool = False) -> Transformer:
    """A model built from `state_dict` (our key names) by assignment: checked, then put.
    Trainable parameters, eval mode, like every loader's. Without a device or dtype change
    the parameters *are* the given tensors: training the model changes them (clone first)."""
    from tqdm.auto import tqdm

    check_shapes({k: tuple(v.shape) for k, v in state_dict.items()}, args, where)
    model = empty_model(args)
    for name, tensor in tqdm(state_dict.items(), desc="loading", unit="tensor", disable=not progress):
        put_tensor(model, name, tensor, device, dtype)
    return finish(model, device)


