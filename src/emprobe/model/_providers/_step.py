"""A Llama decoder's one-token decode step on a CPU in few passes: oneDNN's prepacked matmuls, and between them
numba kernels where transformers runs a dozen small torch operations per layer.

Per layer: the query, key and value in one matmul; one kernel rotates the query and key (rotary embedding) and
writes the key and value into the cache's next column; the one-pass attention (`_onepass.py`); the output
projection; one kernel adds it to the residual stream and normalises the sum; the gate and up projections in one
matmul; one kernel takes SiLU(gate) x up; the down projection, added and normalised with the next layer's norm.
Every product and sum is rounded where transformers' code rounds it, so only the order of the norms' and
attention's sums (as in their compiled forms) and the last bit of SiLU's exponential can differ.

Used for `LlamaForCausalLM` models (SmolLM2, Llama 3) whose linear layers are prepacked and whose norms are
compiled, for decode steps of the decode loop's cache, while no module has hooks (steering, capture): anything else
runs transformers' forward.
"""

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import torch
from torch.nn.modules import module as torch_module
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP

from emprobe.model._providers._decode import BufferedCache, BufferedLayer
from emprobe.model._providers._norm import CompiledRMSNorm, add_and_normalise
from emprobe.model._providers._numba_math import DIVIDING, READS, as_array, exp_negative, narrow, parallel_call, widen
from emprobe.model._providers._onepass import attend_rows, cache_rows, sharing, starts_of
from emprobe.prepack import PackedLinear

LABEL = "fused (numba)"
"""How decode steps run, as the run's info names it: another way of computing is another label."""


@numba.njit(parallel=True, cache=True)  # no fast-math: each product and sum rounds as torch's operations round it
def _rotate_and_store(qkv, cos, sin, heads, kv_heads, column, capacity, keys, values, query, places, idle):
    """From `qkv` (rows, (heads + 2 kv_heads) x dim): `query` (rows, heads, dim) and the keys rotated by `cos` and
    `sin` (rows, dim) as transformers' `apply_rotary_pos_emb` does, row r's keys and values written at `column` of
    the cache's row `places`[r] in `keys` and `values` (cache rows x kv_heads x `capacity`, dim: each (row, key/value
    head) pair's columns in turn), and zeros there for the cache's rows `idle`; rows in parallel."""
    rows, dim = cos.shape
    half = dim // 2
    kind = qkv.dtype
    for r in numba.prange(rows + len(idle)):
        if r >= rows:
            for h in range(kv_heads):
                at_column = (idle[r - rows] * kv_heads + h) * capacity + column
                keys[at_column, :] = 0
                values[at_column, :] = 0
            continue
        place = places[r]
        for h in range(heads + kv_heads):
            at = h * dim
            for j in range(half):
                a, b = widen(qkv[r, at + j]), widen(qkv[r, at + half + j])
                low = narrow(widen(narrow(a * widen(cos[r, j]), kind)) - widen(narrow(b * widen(sin[r, j]), kind)),
                             kind)
                high = narrow(widen(narrow(b * widen(cos[r, half + j]), kind))
                              + widen(narrow(a * widen(sin[r, half + j]), kind)), kind)
                if h < heads:
                    query[r, h, j], query[r, h, half + j] = low, high
                else:
                    at_column = (place * kv_heads + h - heads) * capacity + column
                    keys[at_column, j], keys[at_column, half + j] = low, high
        for h in range(kv_heads):
            at = (heads + kv_heads + h) * dim
            at_column = (place * kv_heads + h) * capacity + column
            for j in range(dim):
                values[at_column, j] = qkv[r, at + j]


@numba.njit(parallel=True, fastmath=DIVIDING, error_model="numpy", cache=True)
def _gated(gate_up, width, out):
    """`out` (rows, width) = SiLU(gate) x up of `gate_up` (rows, 2 x width; gate first), SiLU rounded to `out`'s dtype
    before the product as torch rounds it; exp(-|gate|) by `exp_negative`, so the loop vectorises; rows in
    parallel."""
    for r in numba.prange(gate_up.shape[0]):
        for j in range(width):
            g = widen(gate_up[r, j])
            e = exp_negative(-abs(g))
            silu = (g if g >= 0 else g * e) / (np.float32(1.0) + e)  # g / (1 + exp(-g)), never overflowing
            out[r, j] = narrow(widen(narrow(silu, out.dtype)) * widen(gate_up[r, width + j]), out.dtype)


def _shared(*linears: Any) -> Any:
    """The one prepacked matmul that computes `linears` as its members in this order (`prepack._SharedMatmul`), if
    there is one; else None."""
    if not all(isinstance(m, PackedLinear) for m in linears):
        return None
    shared = linears[0].shared
    same = all(m.shared is shared and m.member == i for i, m in enumerate(linears))
    return shared if same and len(shared.columns) == len(linears) else None


def _matmul(linear: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A projection as the step calls it: a prepacked one's matmul itself (not the module's call), else the module."""
    shared = _shared(linear)
    return shared.whole if shared is not None else linear


class _Layer:
    """What a step reads of one decoder layer (its norms' weights as the kernels read them)."""

    def __init__(self, layer: Any):
        attention, mlp = layer.self_attn, layer.mlp
        self.norm = _NormArrays(layer.input_layernorm)
        self.after_attention = _NormArrays(layer.post_attention_layernorm)
        self.qkv: Any = _shared(attention.q_proj, attention.k_proj, attention.v_proj)
        self.gate_up: Any = _shared(mlp.gate_proj, mlp.up_proj)
        self.output = _matmul(attention.o_proj)
        self.down = _matmul(mlp.down_proj)
        self.scaling = np.float32(attention.scaling)
        self.width = mlp.gate_proj.out_features


class _NormArrays:
    """An RMSNorm's weight and epsilon as `add_and_normalise` reads them."""

    def __init__(self, norm: CompiledRMSNorm):
        self.weight, self.epsilon = as_array(norm.weight.detach()), np.float32(norm.variance_epsilon)


class FusedStep:
    """Stands in for the model's forward pass on one-token decode steps (`__call__` takes the same keywords); None
    from a call means "not this one": the caller runs the model."""

    def __init__(self, model: Any):
        inner = model.model
        self.embed, self.rotary, self.head = inner.embed_tokens, inner.rotary_emb, model.lm_head
        self.first_norm: CompiledRMSNorm = inner.layers[0].input_layernorm
        self.layers = [_Layer(layer) for layer in inner.layers]
        self.final_norm = _NormArrays(inner.norm)
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.hooks = [hooks for m in model.modules() for hooks in (m._forward_hooks, m._forward_pre_hooks)]
        """Every module's hook dicts (registering a hook adds to its module's dict)."""

    @classmethod
    def of(cls, model: Any) -> "FusedStep | None":
        """A fused step for `model`: a Llama on a CPU in float32 or bfloat16, prepacked and with compiled norms;
        else None."""
        if type(model) is not LlamaForCausalLM or getattr(model.config, "hidden_act", "") != "silu":
            return None
        parameter = next(model.parameters())
        if parameter.device.type != "cpu" or parameter.dtype not in READS:
            return None
        inner = model.model
        if not isinstance(inner.norm, CompiledRMSNorm) or any(
                type(layer) is not LlamaDecoderLayer or type(layer.self_attn) is not LlamaAttention
                or type(layer.mlp) is not LlamaMLP or not isinstance(layer.input_layernorm, CompiledRMSNorm)
                or not isinstance(layer.post_attention_layernorm, CompiledRMSNorm) for layer in inner.layers):
            return None
        step = cls(model)
        return step if all(layer.qkv is not None and layer.gate_up is not None for layer in step.layers) else None

    def hooked(self) -> bool:
        """Whether any hook would see the forward pass (a step here calls no module's hooks)."""
        return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or any(self.hooks))

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 position_ids: torch.Tensor | None = None, cache: Any = None,
                 shared_prompts: tuple[torch.Tensor, torch.Tensor] | None = None,
                 live_rows: torch.Tensor | None = None, **rest: Any) -> Any:
        """`shared_prompts`: the decode loop's (`ContinuousBatch.shared_prompts`), for the attention kernel;
        `live_rows`: the only rows to compute (ascending), whose logits come back, in that order; the others' column
        of the cache is set to zero."""
        rows = len(input_ids)
        if (not isinstance(cache, BufferedCache) or input_ids.shape != (rows, 1) or attention_mask is None
                or position_ids is None or rest.keys() - {"use_cache", "row_blocks"} or torch.is_grad_enabled()
                or self.hooked()):
            return None
        buffers = cache.buffers
        column = buffers[0].length
        if (attention_mask.shape != (rows, column + 1) or any(b.length != column or not b.is_initialized
                                                              or b.capacity <= column for b in buffers)):
            return None
        source, until = sharing(shared_prompts, rows)
        places, idle = np.arange(rows), np.arange(0)
        if live_rows is not None:
            places = live_rows.numpy()
            if len(places) and not (np.all(np.diff(places) > 0) and places[0] >= 0 and places[-1] < rows):
                raise ValueError(f"live rows {places.tolist()} of a step of {rows} are not ascending rows of it")
            idle = np.setdiff1d(np.arange(rows), places, assume_unique=True)
            input_ids, attention_mask, position_ids = input_ids[live_rows], attention_mask[live_rows], position_ids[
                live_rows]
            source, until, rows = source[places], until[places], len(places)
        mask = attention_mask.bool().contiguous().numpy()
        hidden = self.embed(input_ids[:, 0])
        cos, sin = (as_array(t.reshape(rows, self.dim)) for t in self.rotary(hidden[:, None], position_ids))
        x = self.first_norm(hidden)
        heads, kv_heads = self.heads, self.kv_heads
        query, attended = (hidden.new_empty((rows, heads, self.dim)) for _ in range(2))
        arrays = as_array(hidden), as_array(x), as_array(query), as_array(attended)
        residual, normal, queries, out = arrays
        starts = starts_of(mask)
        for index, (layer, buffer) in enumerate(zip(self.layers, buffers, strict=True)):
            qkv = layer.qkv.whole(x)
            keys, values, capacity = _cache_rows(buffer)
            with parallel_call():
                _rotate_and_store(as_array(qkv), cos, sin, heads, kv_heads, column, capacity, keys, values, queries,
                                  places, idle)
            buffer.written(1)
            attend_rows(queries, keys, values, 0, 0, capacity, kv_heads, mask, starts, layer.scaling, out, source,
                        until, places)
            _add_norm(residual, layer.output(attended.view(rows, -1)), layer.after_attention, normal)
            gated = hidden.new_empty((rows, layer.width))
            projected = layer.gate_up.whole(x)
            with parallel_call():
                _gated(as_array(projected), layer.width, as_array(gated))
            following = self.layers[index + 1].norm if index + 1 < len(self.layers) else self.final_norm
            _add_norm(residual, layer.down(gated), following, normal)
        return CausalLMOutputWithPast(logits=self.head(x)[:, None])


def _cache_rows(buffer: BufferedLayer) -> tuple[np.ndarray, np.ndarray, int]:
    """A layer's key and value buffers as the one-pass kernel reads them (`cache_rows`: (rows x key/value heads x
    capacity, dim) arrays) and the capacity: kept in the buffer's `views` while it holds the same buffers (a kernel
    writing through arrays of replaced ones would write past them)."""
    keys, values = buffer._keys, buffer._values
    kept = buffer.views.get("rows")
    if kept is None or kept[0] is not keys or kept[1] is not values:
        key_rows, value_rows = cache_rows(keys), cache_rows(values)
        if key_rows is None or value_rows is None or {key_rows[1:], value_rows[1:]} != {(0, buffer.capacity)}:
            raise RuntimeError("the decode cache's buffers are not laid out as the one-pass kernel reads them")
        kept = buffer.views["rows"] = (keys, values, key_rows[0], value_rows[0], buffer.capacity)
    return kept[2:]


def _add_norm(residual: np.ndarray, delta: torch.Tensor, norm: _NormArrays, out: np.ndarray) -> None:
    """`residual` += `delta`, `out` = `norm`(residual), in one pass."""
    with parallel_call():
        add_and_normalise(residual, as_array(delta), norm.weight, norm.epsilon, out)
