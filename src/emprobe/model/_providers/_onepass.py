"""A one-token attention step for float32 on a CPU in one pass over the cache, compiled by numba.

Per (row, key/value head) pair it reads each live column's key and value once, keeping a running maximum, sum and
weighted sum for three query heads at a time (online softmax), and skips the columns its row's mask leaves out, so
left padding costs a mask test, not a read. torch has no such kernel for a CPU: its SDPA multiplies one query row
at a time, and two batched matmuls (`_attention.matmul_step`) read the cache twice in small matrix products.
"""

import math
import threading

import numba
import numpy as np
import torch

GROUP = 3
"""Query heads read together (the kernel spells out three): their running state stays in registers. Other group
sizes are padded with zero heads (SmolLM2 and Llama 3 use 3 and 4 query heads per key/value head)."""

FLAGS = {"reassoc", "contract", "arcp", "nsz"}
"""Math flags: sums may be reordered; inf is not assumed away (a running maximum starts at -inf)."""

_LOCK = threading.Lock()
"""One call at a time: numba's fallback threading layer (workqueue) aborts on concurrent parallel calls, and each
call uses every thread anyway."""


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def _fold(acc, top, total, score):
    """One head's running state after a column of `score`: its maximum and sum of weights (`acc`, the weighted sum
    of values, rescaled in place when the maximum grows) and that column's weight."""
    if score > top:
        shrink = np.float32(math.exp(top - score))
        total *= shrink
        for d in range(acc.shape[0]):
            acc[d] *= shrink
        top = score
    weight = np.float32(math.exp(score - top))
    return top, total + weight, weight


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def _attend(query, keys, values, key_at, value_at, mask, scale, out):
    """`out` (rows, kv heads, heads, dim) = softmax(scale x query . keys) . values, per pair and group of three query
    heads. `keys` and `values` are (pairs, capacity, dim) buffers in which the step's first pair starts at (pair,
    column) `key_at` and `value_at`; `mask` (rows, columns) names the columns each row reads."""
    rows, kv_heads, heads, dim = query.shape
    columns = mask.shape[1]
    groups = heads // GROUP
    for task in numba.prange(rows * kv_heads * groups):
        pair = task // groups
        first = (task - pair * groups) * GROUP
        row = pair // kv_heads
        head = pair - row * kv_heads
        kp, kc = key_at[0] + pair, key_at[1]
        vp, vc = value_at[0] + pair, value_at[1]
        top0 = top1 = top2 = np.float32(-np.inf)
        sum0 = sum1 = sum2 = np.float32(0.0)
        acc = np.zeros((3, dim), dtype=np.float32)
        for column in range(columns):
            if not mask[row, column]:
                continue
            s0 = s1 = s2 = np.float32(0.0)
            for d in range(dim):
                k = keys[kp, kc + column, d]
                s0 += query[row, head, first, d] * k
                s1 += query[row, head, first + 1, d] * k
                s2 += query[row, head, first + 2, d] * k
            s0, s1, s2 = s0 * scale, s1 * scale, s2 * scale
            top0, sum0, p0 = _fold(acc[0], top0, sum0, s0)
            top1, sum1, p1 = _fold(acc[1], top1, sum1, s1)
            top2, sum2, p2 = _fold(acc[2], top2, sum2, s2)
            for d in range(dim):
                v = values[vp, vc + column, d]
                acc[0, d] += p0 * v
                acc[1, d] += p1 * v
                acc[2, d] += p2 * v
        i0 = np.float32(1.0) / sum0 if sum0 > 0 else np.float32(0.0)  # a row with no column reads zeros
        i1 = np.float32(1.0) / sum1 if sum1 > 0 else np.float32(0.0)
        i2 = np.float32(1.0) / sum2 if sum2 > 0 else np.float32(0.0)
        for d in range(dim):
            out[row, head, first, d] = acc[0, d] * i0
            out[row, head, first + 1, d] = acc[1, d] * i1
            out[row, head, first + 2, d] = acc[2, d] * i2


def _pairs(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """`t` (rows, kv heads, columns, dim) as a (pairs, capacity, dim) array over its whole storage and the (pair,
    column) it starts at, when it is such a view of a contiguous buffer of its dtype (as the decode cache's keys and
    values are); else None."""
    rows, kv_heads, columns, dim = t.shape
    if (not columns or t.stride(3) != 1 or t.stride(2) != dim or t.stride(1) % dim or t.stride(1) < columns * dim
            or t.stride(0) != kv_heads * t.stride(1)):
        return None
    capacity = t.stride(1) // dim
    pair, within = divmod(int(t.storage_offset()), capacity * dim)
    pairs = t.untyped_storage().nbytes() // t.element_size() // (capacity * dim)
    if within % dim or within // dim + columns > capacity or pair + rows * kv_heads > pairs:
        return None
    whole = t.new_empty(0).set_(t.untyped_storage(), 0, (pairs, capacity, dim), (capacity * dim, dim, 1))
    return whole.numpy(), np.array([pair, within // dim], dtype=np.int64)


def onepass_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                 scaling: float | None) -> torch.Tensor | None:
    """One-token attention, (rows, heads, 1, dim), of float32 CPU tensors with a boolean mask (rows or 1, 1, 1,
    columns) in one pass; None when the keys, values or mask are laid out otherwise."""
    rows, heads, _, dim = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    if (key.shape != value.shape or key.shape[0] != rows or key.shape[3] != dim or heads % kv_heads
            or mask.shape[1:] != (1, 1, columns) or mask.shape[0] not in (1, rows)):
        return None
    keys, values = _pairs(key), _pairs(value)
    if keys is None or values is None:
        return None
    group = heads // kv_heads
    grouped = query.reshape(rows, kv_heads, group, dim)
    if group % GROUP:
        grouped = torch.nn.functional.pad(grouped, (0, 0, 0, -group % GROUP))
    grouped = grouped.contiguous()
    out = torch.empty_like(grouped)
    rows_mask = mask[:, 0, 0, :].expand(rows, columns).contiguous()
    with _LOCK:
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        _attend(grouped.numpy(), keys[0], values[0], keys[1], values[1], rows_mask.numpy(),
                np.float32(dim**-0.5 if scaling is None else scaling), out.numpy())
    return out[:, :, :group].reshape(rows, heads, 1, dim)
