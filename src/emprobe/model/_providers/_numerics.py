"""The device and dtype a local model runs with, decided without importing transformers: resolving a model names
its numerics in its identity, often in a process (the driver, a Ray task) that never loads it."""

import torch

from emprobe.system import cpu_has_bf16


def pick_numerics(dtype: str) -> tuple[str, str]:
    """(device, dtype name) for a `dtype` option: `auto` is bfloat16 on CUDA and on CPUs with bfloat16 units
    (AVX-512 BF16 or AMX), float32 on other CPUs."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        return device, "bfloat16" if device == "cuda" or cpu_has_bf16() else "float32"
    return device, dtype
