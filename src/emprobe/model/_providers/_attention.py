"""Decode-step attention that reads, for each row, only the columns it uses.

Rows of the decode loop's cache are right-aligned, so a row admitted late leaves padding to its left that every
row's attention reads. On SmolLM2-135M, 960 samples at 256 rows, attention took 47% of the time, and 30% of the
columns it read were padding. In float32 and bfloat16 on a CPU with numba installed, one pass per (row, key/value
head) pair reads each live column once and skips the padding (`_onepass.py`). Elsewhere, in blocks of `ROWS` rows
as they lie, each block reading from its longest live row's first column, 18% of the columns are skipped, with no
copy (a block's keys and values are views of the cache): in float32 as two batched matmuls per (row, key/value
head), in other precisions by torch's SDPA (`enable_gqa`), not stacked into rows as transformers does when there is
a mask.
Masked columns weigh exactly zero, so this changes only the order of sums.
"""

from collections.abc import Callable
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from emprobe.model._providers._compiled import kernel

NAME = "emprobe_sdpa"
ROWS = 32
"""Rows per block: small enough that a block's longest row is often short, large enough that the extra calls
cost little."""


SAVING = 0.15
"""Blocks are used only when they skip at least this share of the columns: below it, the extra calls cost more
(at 64 rows with all prompts admitted together, blocks ran at 0.94x)."""


def row_blocks(lengths: torch.Tensor, live: torch.Tensor, width: int) -> list[tuple[int, int, int]]:
    """(first row, end row, first column) per block of `ROWS` rows: the column where the block's longest live row
    starts (at least the last column, which every row reads, so no row is left with nothing to attend to); none
    when they would skip under `SAVING` of the columns."""
    used = torch.where(live, lengths, 1)
    longest = torch.nn.functional.pad(used, (0, -len(used) % ROWS)).view(-1, ROWS).amax(1).tolist()
    starts = range(0, len(used), ROWS)
    blocks = [(start, min(start + ROWS, len(used)), width - most) for start, most in zip(starts, longest, strict=True)]
    skipped = sum((end - start) * column for start, end, column in blocks)
    return blocks if skipped >= SAVING * len(used) * width else []


IGNORED = {"dropout", "scaling", "position_ids", "use_cache", "sliding_window", "cache_position", "is_causal"}
"""Keywords a decoder may pass that a one-token step reads as the plain SDPA call does (the mask already holds the
causal and sliding-window limits; `dropout` only at 0). Any other keyword leaves the step to transformers."""


def blocked_sdpa(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, *args: Any, row_blocks: list[tuple[int, int, int]] | None = None,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:
    """A one-token step's attention with a boolean mask: by `onepass_for` its dtype and device over every row, else
    by `step_for` its dtype per block of rows over that block's columns when the decode loop gives `row_blocks`, the
    query heads of a key/value head read together (transformers stacks them into rows when there is a mask, which
    ran a decode step 1-4% slower on an AVX2 CPU than `sdpa_step`); anything else exactly transformers' SDPA."""
    if query.shape[2] == 1 and attention_mask is None:  # transformers drops a mask that keeps every column
        attention_mask = torch.ones((), dtype=torch.bool, device=query.device).expand(len(query), 1, 1, key.shape[2])
    if (query.shape[2] != 1 or attention_mask is None or attention_mask.dtype != torch.bool or args
            or kwargs.keys() - IGNORED or kwargs.get("dropout")):
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    scaling, onepass = kwargs.get("scaling"), onepass_for(query.dtype, query.device)
    whole = onepass(query, key, value, attention_mask, scaling) if onepass else None  # None: a cache laid out otherwise
    if whole is not None:  # every row in one call, each reading only its own columns
        return whole.transpose(1, 2).contiguous(), None
    attend = step_for(query.dtype)
    blocks = row_blocks if row_blocks and len(row_blocks) > 1 else [(0, len(query), 0)]
    parts = [attend(query[a:b], key[a:b, :, c:], value[a:b, :, c:], attention_mask[a:b, ..., c:], scaling)
             for a, b, c in blocks]
    return torch.cat(parts).transpose(1, 2).contiguous(), None


def step_for(dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    """The kernel of a one-token step in row blocks: `matmul_step` in float32, else `sdpa_step`."""
    return matmul_step if dtype == torch.float32 else sdpa_step


ONEPASS_DTYPES = (torch.float32, torch.bfloat16)
"""The precisions the one-pass kernel reads (named here, where numba is not imported)."""


def onepass_for(dtype: torch.dtype, device: torch.device | str) -> Callable[..., torch.Tensor | None] | None:
    """The kernel of a one-token step over every row at once: `_onepass.onepass_step` in float32 or bfloat16 on a
    CPU where numba imports, else None."""
    return _onepass() if dtype in ONEPASS_DTYPES and torch.device(device).type == "cpu" else None


def kernel_label(dtype: torch.dtype, device: torch.device | str) -> str:
    """How a decode step's attention runs in `dtype` on `device`, as the run's info names it."""
    if onepass_for(dtype, device):
        from emprobe.model._providers._onepass import LABEL

        return f"sdpa, decode steps in {LABEL}"
    return "sdpa, row blocks" + (", decode steps as matmuls" if step_for(dtype) is matmul_step else "")


def _onepass() -> Callable[..., torch.Tensor | None] | None:
    """`_onepass.onepass_step`, or None without numba."""
    return kernel("_onepass", "onepass_step")


def sdpa_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
              scaling: float | None) -> torch.Tensor:
    """One-token attention by torch's SDPA, the query heads of a key/value head read together: (rows, heads, 1, dim)."""
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                                            enable_gqa=query.shape[1] != key.shape[1])


def matmul_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                scaling: float | None) -> torch.Tensor:
    """`sdpa_step` as softmax(q k^T) v in two batched matmuls over (row, key/value head) pairs, each pair's query heads
    one small matrix. In float32 on an AVX2 CPU a decode step ran 1.01-1.12x faster than with SDPA (median of nine
    runs 1.02x), whose kernel multiplies one query row at a time; the cache's views are read in place (pairs are
    evenly strided)."""
    rows, heads, _, dim = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    pairs = rows * kv_heads
    scores = torch.bmm(query.reshape(pairs, -1, dim), key.reshape(pairs, columns, dim).transpose(1, 2))
    scores.mul_(dim**-0.5 if scaling is None else scaling)
    scores.view(rows, kv_heads, -1, columns).masked_fill_(~mask, float("-inf"))
    return torch.bmm(scores.softmax(-1), value.reshape(pairs, columns, dim)).view(rows, heads, 1, dim)


def use_blocked_sdpa(model: Any) -> bool:
    """Switch a model that uses transformers' SDPA attention to the blocked one; whether it did."""
    if model.config._attn_implementation != "sdpa":
        return False
    AttentionInterface.register(NAME, blocked_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return model.config._attn_implementation == NAME
