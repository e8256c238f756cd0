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
import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

GROUP = 3
"""Query heads read together (the kernel spells out three): each key and value read serves them all. Other group
sizes are padded with zero heads (SmolLM2 and Llama 3 use 3 and 4 query heads per key/value head)."""

FLAGS = {"reassoc", "contract", "arcp", "nsz"}
"""Math flags: sums may be reordered; inf is not assumed away (a running maximum starts at -inf)."""

_LOCK = threading.Lock()
"""One call at a time: numba's fallback threading layer (workqueue) aborts on concurrent parallel calls, and each
call uses every thread anyway."""


CHUNK = 32
"""Live columns scored together: their weights' exponentials are then one vectorised loop."""

READS = {torch.float32: torch.float32, torch.bfloat16: torch.int16}
"""The caches it reads, and how: a bfloat16 one as its 16-bit patterns (numpy has no bfloat16)."""

LABEL = f"one pass (numba, {CHUNK}-column chunks)"
"""The kernel as the run's info names it: another way of summing is another label (texts may differ)."""

LOG2E = np.float32(1.4426950408889634)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.1219444005469057e-4)
"""ln 2 split in two so that `n x LN2_HIGH` is exact for the exponents used."""


@intrinsic
def _bfloat16_bits(typingctx, bits):
    """The float32 whose upper half is the 16-bit pattern `bits` (a bfloat16 read as int16): one shift, no rounding."""
    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


def widen(x):
    """`x` as a float32: itself for a float32, a bfloat16's 16-bit pattern widened (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(widen, inline="always")
def _widen(x):
    if x == types.float32:
        return lambda x: x
    if x == types.int16:
        return lambda x: _bfloat16_bits(x)  # type: ignore[call-arg]  # numba supplies the typing context
    return None


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def _exp_parts(x):
    """exp(x) for x <= 0 as (m, n) with exp(x) = m x 2**n: plain arithmetic, so loops of it vectorise (numba's
    `math.exp` is a scalar call). Taylor to the 7th power on |r| <= ln 2 / 2: within 3e-7 of exp, relatively,
    down to exp(-87), which it gives for anything lower."""
    x = max(x, np.float32(-87.0))
    n = np.floor(x * LOG2E + np.float32(0.5))
    r = x - n * LN2_HIGH - n * LN2_LOW
    m = np.float32(1 / 5040)
    m = m * r + np.float32(1 / 720)
    m = m * r + np.float32(1 / 120)
    m = m * r + np.float32(1 / 24)
    m = m * r + np.float32(1 / 6)
    m = m * r + np.float32(0.5)
    m = m * r + np.float32(1.0)
    return m * r + np.float32(1.0), np.int32(n)


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def _attend(query, keys, values, key_at, value_at, mask, scale, out):
    """`out` (rows, kv heads, heads, dim) = softmax(scale x query . keys) . values, per pair and group of three query
    heads. `keys` and `values` are (pairs, capacity, dim) buffers, of float32 or of bfloat16 patterns (int16), in
    which the step's first pair starts at (pair, column) `key_at` and `value_at`; `mask` (rows, columns) names the
    columns each row reads."""
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
                    s0 += query[row, head, first, d] * k
                    s1 += query[row, head, first + 1, d] * k
                    s2 += query[row, head, first + 2, d] * k
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
                    weight[h, j], e = _exp_parts(weight[h, j] - peak)
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
        for h in range(GROUP):
            inverse = np.float32(1.0) / total[h] if total[h] > 0 else np.float32(0.0)  # no live column reads zeros
            for d in range(dim):
                out[row, head, first + h, d] = acc[h, d] * inverse


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
    return whole.view(READS[t.dtype]).numpy(), np.array([pair, within // dim], dtype=np.int64)


def onepass_step(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                 scaling: float | None) -> torch.Tensor | None:
    """One-token attention, (rows, heads, 1, dim), of float32 or bfloat16 CPU tensors with a boolean mask (rows or 1,
    1, 1, columns) in one pass, in the query's dtype; None when the keys, values or mask are laid out otherwise."""
    rows, heads, _, dim = query.shape
    kv_heads, columns = key.shape[1], key.shape[2]
    if (key.shape != value.shape or key.dtype != value.dtype or key.shape[0] != rows or key.shape[3] != dim
            or heads % kv_heads
            or mask.shape[1:] != (1, 1, columns) or mask.shape[0] not in (1, rows)):
        return None
    keys, values = _pairs(key), _pairs(value)
    if keys is None or values is None:
        return None
    group = heads // kv_heads
    grouped = query.reshape(rows, kv_heads, group, dim)
    if group % GROUP:
        grouped = torch.nn.functional.pad(grouped, (0, 0, 0, -group % GROUP))
    grouped = grouped.to(torch.float32).contiguous()
    out = torch.empty_like(grouped)
    rows_mask = mask[:, 0, 0, :].expand(rows, columns).contiguous()
    with _LOCK:
        numba.set_num_threads(min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        _attend(grouped.numpy(), keys[0], values[0], keys[1], values[1], rows_mask.numpy(),
                np.float32(dim**-0.5 if scaling is None else scaling), out.numpy())
    return out[:, :, :group].reshape(rows, heads, 1, dim).to(query.dtype)
