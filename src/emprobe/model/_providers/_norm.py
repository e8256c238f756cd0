"""A decoder's RMSNorm as one compiled pass on a CPU (numba), in float32 and bfloat16, for inference.

torch runs transformers' RMSNorm as eight operations (a widening copy, square, mean, add, rsqrt, two products, a
narrowing copy), each a pass over memory and a dispatch from Python: on SmolLM2-135M in bfloat16 at 128 rows they
took about 8% of a decode run. Here it is one pass that rounds where transformers' code rounds (in bfloat16 once
after normalising and once after the weight), so results differ from transformers' only in the order of the sum
and the last bit of a square root. Only modules whose forward is exactly Llama's are replaced (most decoders copy
it); any other input (a device, a dtype, gradients, a layout) takes the module's own forward.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from emprobe.model._providers._numba_math import FLAGS, READS, as_array, narrow, widen

LABEL = "rms norm (numba)"
"""What the run's info names as compiled: another way of computing is another label (texts may differ)."""


@numba.njit(inline="always", fastmath=FLAGS, error_model="numpy", cache=True)
def _normalise(x, i, weight, eps, out):
    """`out[i]` = weight x (x[i] / sqrt(mean(x[i]^2) + eps)), rounded to `out`'s dtype after normalising and after
    the weight, as transformers rounds."""
    hidden = x.shape[1]
    total = np.float32(0.0)
    for j in range(hidden):
        v = widen(x[i, j])
        total += v * v
    scale = np.float32(1.0) / np.sqrt(total / np.float32(hidden) + eps)
    for j in range(hidden):
        normal = widen(narrow(widen(x[i, j]) * scale, out.dtype))
        out[i, j] = narrow(widen(weight[j]) * normal, out.dtype)


@numba.njit(fastmath=FLAGS, error_model="numpy", cache=True)
def _rms_norm(x, weight, eps, out):
    """`_normalise` every row of `x` (rows, hidden) into `out`."""
    for i in range(x.shape[0]):
        _normalise(x, i, weight, eps, out)


@numba.njit(parallel=True, fastmath=FLAGS, error_model="numpy", cache=True)
def add_and_normalise(residual, delta, weight, eps, out):
    """`residual` += `delta` (rounded to its dtype, as torch adds), then `out` = the RMSNorm of the sum, per row of
    (rows, hidden) float32 arrays or bfloat16 patterns: a decoder's residual add and its next norm in one pass; rows
    in parallel."""
    for i in numba.prange(residual.shape[0]):
        for j in range(residual.shape[1]):
            residual[i, j] = narrow(widen(residual[i, j]) + widen(delta[i, j]), residual.dtype)
        _normalise(residual, i, weight, eps, out)


class CompiledRMSNorm(nn.Module):
    """Stands in for a Llama-like RMSNorm (the same `weight`), normalising CPU float32 or bfloat16 rows in one pass."""

    def __init__(self, norm: Any):
        super().__init__()
        self.weight, self.variance_epsilon = norm.weight, norm.variance_epsilon
        self.plain: Callable[[torch.Tensor], torch.Tensor] = norm.forward
        """The replaced module's own forward, for anything the kernel does not take."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dtype not in READS or self.weight.dtype != x.dtype or not x.is_contiguous()
                or (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))):
            return self.plain(x)
        out = torch.empty_like(x)
        hidden = x.shape[-1]
        _rms_norm(as_array(x.view(-1, hidden)), as_array(self.weight.detach()), np.float32(self.variance_epsilon),
                  as_array(out.view(-1, hidden)))
        return out


@functools.cache
def _llama_like(cls: Any) -> bool:
    """Whether `cls` computes as Llama's RMSNorm: it is it, or its forward's source text is the same (most decoders
    copy it; Gemma's, which adds one to the weight, does not)."""
    if cls.forward is LlamaRMSNorm.forward:
        return True
    try:
        return inspect.getsource(cls.forward) == inspect.getsource(LlamaRMSNorm.forward)
    except (OSError, TypeError):
        return False


def compile_norms(model: nn.Module) -> int:
    """Replace the model's Llama-like RMSNorms by compiled stand-ins; returns how many were replaced. For inference."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            kind: Any = type(child)
            if _llama_like(kind) and hasattr(child, "variance_epsilon") and hasattr(child, "weight"):
                setattr(parent, name, CompiledRMSNorm(child))
                replaced += 1
    return replaced
