"""Running on a GPU: choosing the device and dtype, and optionally compiling the model.

float16 and bfloat16 halve the weights' memory and the bytes read per generated token,
which is what bounds decoding speed at batch 1. bfloat16 has float32's range (no
overflow) but needs an Ampere or newer GPU (compute capability 8.0; an A100, H100 or
RTX 30xx): Colab's T4 (7.5) has no fast bfloat16, so Meta's bfloat16 weights are loaded
as float16 there. On the CPU, float32 is the fast choice (half-precision matmuls are slow
on many CPUs), at twice the memory.
Not handled: several GPUs, Apple's MPS quirks (it may work, it is not tested).

Chapter: real_weights.
"""

from __future__ import annotations

import torch

from llama_from_scratch.checkpoints.dtypes import parse_dtype


def pick_device(name: str | None = "auto") -> torch.device:
    """"auto": CUDA if there is a GPU, else the CPU. "cuda" without a GPU is an error that says so."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU "
                         f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); use --device cpu")
    return device


def pick_dtype(name: str | torch.dtype | None, device: torch.device,
               stored: torch.dtype | None = None) -> torch.dtype | None:
    """The dtype to load in; None means "as stored in the checkpoint".

    "auto" (or None) keeps the stored dtype, except that `stored` bfloat16 becomes float16
    on a GPU without fast bfloat16 (a T4). Asking for bfloat16 on such a GPU is an error
    that names float16 as the fix.
    """
    if name in (None, "auto"):
        if device.type == "cuda" and stored == torch.bfloat16 and not native_bf16(device):
            return torch.float16
        return None
    dtype = parse_dtype(name)
    if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        raise ValueError(f"{torch.cuda.get_device_name(device)} has no fast bfloat16 (it needs compute "
                         "capability 8.0, Ampere or newer); use --dtype float16")
    return dtype


def native_bf16(device: torch.device) -> bool:
    """True on a GPU with bfloat16 tensor cores (compute capability 8.0 or newer)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


def compile_model(model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
    """`torch.compile` the model in place (it stays a `Transformer`); returns it.

    dynamic=True: one compiled graph serves every prompt length and cache position, instead
    of a recompilation for each new length. The first calls are slow (compiling).
    """
    model.compile(backend=backend, dynamic=True)
    return model


def device_memory(device: torch.device) -> int | None:
    """Total bytes of a CUDA device's memory; None for the CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory
