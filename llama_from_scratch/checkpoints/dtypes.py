"""The dtypes a checkpoint may be stored or loaded in, by name: one table for the package.

float32 (4 bytes), float16 and bfloat16 (2 bytes each): same memory, different trade-off.
float16 keeps 10 mantissa bits but overflows above 65,504; bfloat16 keeps float32's range
with 7 mantissa bits. Meta ships LLaMA 2 in bfloat16, Hugging Face mostly in float16.

Chapter: real_weights.
"""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """"float16" -> torch.float16 (also "fp16", "bf16", "fp32"); None stays None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    aliases = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}
    key = aliases.get(name, name)
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element: 4 for float32, 2 for float16 and bfloat16."""
    return torch.empty((), dtype=dtype).element_size()
