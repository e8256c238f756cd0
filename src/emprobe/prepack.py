"""Linear layers for CPU inference whose weights oneDNN reorders once at load, instead of on every call, with the
projections that read one input (attention's query, key and value; an MLP's gate and up) done as one matmul.

At a decode step's few rows torch's bfloat16 linear layer spends much of each call reordering a weight it then
reads once, and on some CPUs its float32 matmul is far slower than oneDNN's; a prepacked weight and fewer, wider
matmuls cut that (figures in ARCHITECTURE.md, "The local backend's decode loop"). The local backend, the
built-in judge and its domain check use it."""

import threading
from typing import Any

import torch
from torch import nn

SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("query", "key", "value"))
"""Projections of one module that read the same tensor, in the order the module calls them (Llama-like decoders;
BERT encoders such as the judge's MiniLM)."""
ROWS_HINT = 64
"""The rows per call oneDNN lays the weights out for; any number of rows is still computed exactly."""


def can_prepack(device: str, dtype: torch.dtype) -> bool:
    """Whether prepacking can run here: float32, or bfloat16 where oneDNN runs it, on a CPU. It pays in both: bf16
    1.11x end to end at batch 64 on a Xeon with AMX; float32 1.02x there, and far more on an AVX2 EPYC, where
    torch's own float32 matmul is 2.3-2.5x slower than oneDNN's at the wide projections (ARCHITECTURE.md)."""
    ops = torch.ops.mkldnn
    needed = ("_reorder_linear_weight", "_linear_pointwise", "_is_mkldnn_bf16_supported")
    if device != "cpu" or not torch.backends.mkldnn.is_available() or not all(hasattr(ops, n) for n in needed):
        return False
    return dtype == torch.float32 or (dtype == torch.bfloat16 and bool(ops._is_mkldnn_bf16_supported()))


def linear_bytes(model: nn.Module) -> int:
    """Bytes of the weights of the model's plain linear layers: what a prepacked copy adds."""
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules() if type(m) is nn.Linear)


class _SharedMatmul:
    """One prepacked matmul over the concatenated weights of projections of the same input; each projection
    takes its own columns of the output, which is computed once per input (per thread) and released once all have
    read it."""

    def __init__(self, linears: list[nn.Linear]):
        weight = torch.cat([linear.weight.detach() for linear in linears])
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT)
        biases = [linear.bias for linear in linears]
        self.bias = torch.cat([b.detach() for b in biases]) if biases[0] is not None else None
        ends = torch.tensor([linear.out_features for linear in linears]).cumsum(0).tolist()
        self.columns = list(zip([0, *ends[:-1]], ends, strict=True))
        self._pending = threading.local()  # per thread: (input, output, members yet to read it)

    def whole(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's projection of `x`, side by side in the members' order."""
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def output(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """Member `member`'s projection of `x`; the matmul runs again for a new input or a member reading twice."""
        state = getattr(self._pending, "state", None)
        if state is None or x is not state[0] or member not in state[2]:
            state = (x, self.whole(x), set(range(len(self.columns))))
        _, output, unread = state
        unread.discard(member)
        self._pending.state = state if unread else None
        start, end = self.columns[member]
        return output[..., start:end]


class PackedLinear(nn.Module):
    """Stands in for an `nn.Linear` (same `weight`, `bias` and sizes, for whatever reads them) and computes with a
    prepacked copy of the weight, possibly shared with sibling projections of the same input."""

    def __init__(self, linear: nn.Linear, shared: _SharedMatmul, member: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.shared, self.member = shared, member

    def forward(self, x: torch.Tensor, *_: Any, **__: Any) -> torch.Tensor:
        return self.shared.output(x, self.member)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, prepacked, " \
               f"{len(self.shared.columns)} in one matmul"


def prepack(model: nn.Module) -> int:
    """Replace the model's plain `nn.Linear` layers by prepacked ones, siblings of one input fused (when they agree
    on input size and on having a bias); returns how many layers were replaced. For inference only."""
    replaced = 0
    for parent in list(model.modules()):
        linears = {name: child for name, child in parent.named_children() if type(child) is nn.Linear}
        groups = [[name] for name in linears if not any(name in siblings for siblings in SIBLINGS)]
        for siblings in SIBLINGS:
            present = [linears[n] for n in siblings if n in linears]
            if len(present) == len(siblings) and len({(m.in_features, m.bias is None) for m in present}) == 1:
                groups.append(list(siblings))
            else:
                groups.extend([n] for n in siblings if n in linears)
        for names in groups:
            shared = _SharedMatmul([linears[n] for n in names])
            for member, name in enumerate(names):
                setattr(parent, name, PackedLinear(linears[name], shared, member))
                replaced += 1
    return replaced
