"""A one-token attention step on a CPU in one pass over a float32 or bfloat16 cache, compiled by numba.

Per (row, key/value head) pair it reads each live column's key and value once, keeping a running maximum, sum and
weighted sum for three query heads at a time (online softmax, folded in a chunk of columns at a time so that the
weights' exponentials vectorise), and skips the columns its row's mask leaves out, so left padding costs a mask
test, not a read. torch has no such kernel for a CPU: its SDPA multiplies one query row at a time, and two batched
matmuls (`_attention.matmul_step`) read the cache twice in small matrix products. A bfloat16 cache is read as its
16-bit patterns and widened to float32 as it is read (half the bytes of a float32 cache); the sums are float32 in
both precisions.
"""

import math

import numba
import numpy as np
import torch

from emprobe.model._providers._numba_math import FLAGS, READS, as_array, exp_parts, narrow, parallel_call, widen

GROUP = 3
"""Query heads read together (the kernel spells out three): each key and value read serves them all. Other group
sizes are padded with zero heads (SmolLM2 and Llama 3 use 3 and 4 query heads per key/value head)."""

CHUNK = 32
"""Live columns scored together: their weights' exponentials are then one vectorised loop."""

LABEL = f"one pass (numba, {CHUNK}-column chunks)"
"""The kernel as the run's info names it: another way of summing is another label (texts may differ)."""


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def _attend(query, keys, values, key_at, value_at, kv_heads, mask, scale, out):
    """`out` (rows, heads, dim) = softmax(scale x query . keys) . values, per (row, key/value head) pair and group of
    three of its query heads. `query` and `out` are float32 or bfloat16 patterns (int16); `keys` and `values` are
    (pairs, capacity, dim) buffers of either, in which the step's first pair starts at (pair, column) `key_at` and
    `value_at`; `mask` (rows, columns) names the columns each row reads."""
    rows, heads, dim = query.shape
    columns = mask.shape[1]
    group = heads // kv_heads
    groups = (group + GROUP - 1) // GROUP
    for task in numba.prange(rows * kv_heads * groups):
        pair = task // groups
        first = (task - pair * groups) * GROUP  # of the pair's query heads
        row = pair // kv_heads
        head = (pair - row * kv_heads) * group + first  # in the row's query heads
        width = min(GROUP, group - first)
        kp, kc = key_at[0] + pair, key_at[1]
        vp, vc = value_at[0] + pair, value_at[1]
        q = np.zeros((GROUP, dim), dtype=np.float32)  # the group's query heads, widened; past `width` zero heads
        for h in range(width):
            for d in range(dim):
                q[h, d] = widen(query[row, head + h, d])
        top = np.full(GROUP, -np.inf, dtype=np.float32)  # running maximum, sum of weights and weighted sum per head
        total = np.zeros(GROUP, dtype=np.float32)
        acc = np.zeros((GROUP, dim), dtype=np.float32)
        weight = np.empty((GROUP, CHUNK), dtype=np.float32)
        power = np.empty((GROUP, CHUNK), dtype=np.int32)  # 2**n's float32 bits
        scales = power.view(np.float32)  # the same powers of 2, read as floats
        live = np.empty(CHUNK, dtype=np.int64)
        column = 0
        while True:
            n = 0
            while column < columns and n < CHUNK:
                if mask[row, column]:
                    live[n] = column
                    n += 1
                column += 1
            if n == 0:
                break
            for j in range(n):
                c = kc + live[j]  # hoisted by hand: numba tells LLVM nothing of which arrays may alias
                s0 = s1 = s2 = np.float32(0.0)
                for d in range(dim):
                    k = widen(keys[kp, c, d])
                    s0 += q[0, d] * k
                    s1 += q[1, d] * k
                    s2 += q[2, d] * k
                weight[0, j], weight[1, j], weight[2, j] = s0 * scale, s1 * scale, s2 * scale
            for h in range(GROUP):
                peak = top[h]
                for j in range(n):
                    peak = max(peak, weight[h, j])
                if peak > top[h]:  # rescale what was summed against the old maximum
                    shrink = np.float32(math.exp(top[h] - peak))
                    total[h] *= shrink
                    for d in range(dim):
                        acc[h, d] *= shrink
                    top[h] = peak
                for j in range(n):
                    weight[h, j], e = exp_parts(weight[h, j] - peak)
                    power[h, j] = (e + np.int32(127)) << np.int32(23)
            for h in range(GROUP):
                summed = np.float32(0.0)
                for j in range(n):
                    weight[h, j] *= scales[h, j]
                    summed += weight[h, j]
                total[h] += summed
            for j in range(n):
                c = vc + live[j]
                p0, p1, p2 = weight[0, j], weight[1, j], weight[2, j]
                for d in range(dim):
                    v = widen(values[vp, c, d])
                    acc[0, d] += p0 * v
                    acc[1, d] += p1 * v
                    acc[2, d] += p2 * v
        for h in range(width):
            inverse = np.float32(1.0) / total[h] if total[h] > 0 else np.float32(0.0)  # no live column reads zeros
            for d in range(dim):
                out[row, head + h, d] = narrow(acc[h, d] * inverse, out.dtype)


def _pairs(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """`t` (rows, kv heads, columns, dim) as a (pairs, capacity, dim) array over its whole storage (a bfloat16 one as
    its int16 patterns) and the (pair, column) it starts at, when it is such a view of a contiguous buffer of its
    dtype (as the decode cache's keys and values are); else None."""
    rows, kv_heads, columns, dim = t.shape
    if (t.dtype not in READS or not columns or t.stride(3) != 1 or t.stride(2) != dim or t.stride(1) % dim
            or t.stride(1) < columns * dim or t.stride(0) != kv_heads * t.stride(1)):
        return None
    capacity = t.stride(1) // dim
    pair, within = divmod(int(t.storage_offset()), capacity * dim)
    pairs = t.untyped_storage().nbytes() // t.element_size() // (capacity * dim)
    if within % dim or within // dim + columns > capacity or pair + rows * kv_heads > pairs:
        return None
    whole = t.new_empty(0).set_(t.untyped_storage(), 0, (pairs, capacity, dim), (capacity * dim, dim, 1))
    return as_array(whole), np.array([pair, within // dim], dtype=np.int64)


def onepass_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                 scaling: float | None) -> torch.Tensor | None:
    """One-token attention, (rows, heads, 1, dim), of float32 or bfloat16 CPU tensors with a boolean mask (rows or 1,
    1, 1, columns) in one pass, in the query's dtype, laid out as (rows, 1, heads, dim); None when the keys, values,
    query or mask are laid out otherwise."""
    rows, heads, _, dim = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    if (key.shape != value.shape or key.dtype != value.dtype or key.shape[0] != rows or key.shape[3] != dim
            or heads % kv_heads or query.dtype not in READS
            or mask.shape[1:] != (1, 1, columns) or mask.shape[0] not in (1, rows)):
        return None
    out = query.new_empty((rows, 1, heads, dim))
    rows_mask = mask[:, 0, 0, :].expand(rows, columns).contiguous()
    if not attend(query[:, :, 0], key, value, rows_mask, dim**-0.5 if scaling is None else scaling, out[:, 0]):
        return None
    return out.transpose(1, 2)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float,
           out: torch.Tensor) -> bool:
    """`out` (rows, heads, dim) = one-token attention of `query` (rows, heads, dim) over the columns `mask` (rows,
    columns; boolean, contiguous) keeps of the cache views `key` and `value` (rows, key/value heads, columns, dim);
    False, with nothing computed, when the cache is laid out otherwise."""
    keys, values = _pairs(key), _pairs(value)
    if keys is None or values is None:
        return False
    with parallel_call():
        _attend(as_array(query), keys[0], values[0], keys[1], values[1], key.shape[1], mask.numpy(),
                np.float32(scale), as_array(out))
    return True
