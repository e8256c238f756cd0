"""A one-token attention step on a CPU in one pass over a float32 or bfloat16 cache, compiled by numba.

Per (row, key/value head) pair it reads each live column's key and value once, keeping a running maximum, sum and
weighted sum for three query heads at a time (online softmax, folded in a chunk of columns at a time so that the
weights' exponentials vectorise), and skips the columns its row's mask leaves out, so left padding costs a mask
test, not a read. torch has no such kernel for a CPU: its SDPA multiplies one query row at a time, and two batched
matmuls (`_attention.matmul_step`) read the cache twice in small matrix products. A bfloat16 cache is read as its
16-bit patterns and widened to float32 as it is read (half the bytes of a float32 cache); the sums are float32 in
both precisions.

For head sizes of 64 and 128 on a CPU with AVX-512, the two inner loops are vector code (numba intrinsics that emit
LLVM IR, `scores` and `accumulate`): numba's loops leave LLVM too little to work with there. They reduce each
column's 16 lanes of a query-key product on their own, and keep the weighted sum of values in memory (LLVM cannot
tell that it does not alias the cache), loading and storing it at every column. `scores` reduces 16 columns' dot
products together (a tree of shuffles that ends in one vector of 16 scores) and `accumulate` keeps its sums in
registers over a chunk's columns. The intrinsics live in this file because numba's cache of a kernel is keyed on
its own file's content: an edit here recompiles it.
"""

import math

import llvmlite.binding as llvm
import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from emprobe.model._providers._numba_math import FLAGS, READS, as_array, exp_parts, narrow, parallel_call, widen

LANES = 16
"""Floats per vector: 512 bits, one register with AVX-512 (two with AVX2, where the loops are used instead)."""

BLOCK = 8
"""Vectors of a head's dimensions kept in registers at once by `accumulate` (8 x 16 = 128 dimensions)."""


_FLOAT, _INT32 = ir.FloatType(), ir.IntType(32)
_VECTOR = ir.VectorType(_FLOAT, LANES)


def _element(context, builder, array_type, array, indices):
    """A pointer to `array`[indices]."""
    ary = context.make_array(array_type)(context, builder, value=array)
    return cgutils.get_item_pointer2(context, builder, ary.data, cgutils.unpack_tuple(builder, ary.shape),
                                     cgutils.unpack_tuple(builder, ary.strides), array_type.layout, indices)


def _load(builder, pointer, dtype, offset):
    """`LANES` elements from `pointer` + `offset` elements as float32: a bfloat16 pattern (int16) widened exactly."""
    at = builder.gep(pointer, [ir.Constant(ir.IntType(64), offset)])
    if dtype == types.float32:
        return builder.load(builder.bitcast(at, _VECTOR.as_pointer()), typ=_VECTOR, align=4)
    bits = ir.VectorType(ir.IntType(16), LANES)
    patterns = builder.load(builder.bitcast(at, bits.as_pointer()), typ=bits, align=2)
    wide = ir.VectorType(_INT32, LANES)
    return builder.bitcast(builder.shl(builder.zext(patterns, wide), ir.Constant(wide, 16)), _VECTOR)


def _fma(builder, a, b, c):
    """a x b + c per lane, rounded once (LLVM's fma on vectors)."""
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VECTOR, [_VECTOR] * 3),
                                         f"llvm.fma.v{LANES}f32")
    return builder.call(fma, [a, b, c])


def _splat(builder, value):
    """A vector of `LANES` copies of the float `value`."""
    one = builder.insert_element(ir.Constant(_VECTOR, None), value, ir.Constant(_INT32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_INT32, LANES), [0] * LANES))


def _combine(builder, first, second, half):
    """Two vectors whose lanes hold groups of 2 x `half` partial sums of one column each, as one vector holding
    groups of `half`: the first's columns, then the second's."""
    groups = LANES // (2 * half)
    low = [g * 2 * half + i + LANES * s for s in (0, 1) for g in range(groups) for i in range(half)]
    mask = ir.VectorType(_INT32, LANES)
    return builder.fadd(builder.shuffle_vector(first, second, ir.Constant(mask, low)),
                        builder.shuffle_vector(first, second, ir.Constant(mask, [i + half for i in low])))


def _column_sums(builder, vectors):
    """`LANES` vectors (one column's partial sums each) reduced to one vector of their sums, in their order,
    combining pairs as soon as they form (few vectors live at once)."""
    stack: list[tuple[int, ir.Value]] = []  # (how many columns a vector holds, the vector)
    for vector in vectors:
        held, top = 1, vector
        while stack and stack[-1][0] == held:
            _, below = stack.pop()
            top = _combine(builder, below, top, LANES // (2 * held))
            held *= 2
        stack.append((held, top))
    return stack[0][1]


def _typed(dim, *arrays):
    """The head size as a compile-time number when it is one (numba retries calls with literals), and the arrays'
    dtypes are ones these loops read."""
    return isinstance(dim, types.IntegerLiteral) and dim.literal_value % LANES == 0 and all(
        a.dtype in (types.float32, types.int16) for a in arrays)


@intrinsic
def scores(typingctx, keys, live, n, query, scale, weight, dim):
    """`weight`[h, j] = scale x `query`[h] . `keys`[live[j]] for the 3 heads of `query` (3, dim; float32) and j < n
    rounded up to a multiple of `LANES` (`live` names valid rows of `keys` there; `weight` has room)."""
    if not _typed(dim, keys) or query.dtype != types.float32:
        return None
    vectors = dim.literal_value // LANES

    def codegen(context, builder, signature, args):
        keys_value, live_value, n_value, query_value, scale_value, weight_value, _ = args
        keys_type, live_type, query_type, weight_type = (signature.args[i] for i in (0, 1, 3, 5))
        zero = ir.Constant(ir.IntType(64), 0)
        q = [[_load(builder, _element(context, builder, query_type, query_value, [ir.Constant(ir.IntType(64), h),
                                                                                     zero]), types.float32, b * LANES)
              for b in range(vectors)] for h in range(3)]
        factor = _splat(builder, scale_value)
        groups = builder.udiv(builder.add(n_value, ir.Constant(n_value.type, LANES - 1)),
                              ir.Constant(n_value.type, LANES))
        with cgutils.for_range(builder, groups) as loop:
            first = builder.mul(loop.index, ir.Constant(loop.index.type, LANES))
            sums: list[list[ir.Value]] = [[], [], []]
            for j in range(LANES):
                at = builder.add(first, ir.Constant(first.type, j))
                column = builder.load(_element(context, builder, live_type, live_value, [at]))
                base = _element(context, builder, keys_type, keys_value, [column, zero])
                key = [_load(builder, base, keys_type.dtype, b * LANES) for b in range(vectors)]
                for h in range(3):
                    total = builder.fmul(q[h][0], key[0])
                    for b in range(1, vectors):
                        total = _fma(builder, q[h][b], key[b], total)
                    sums[h].append(total)
            for h in range(3):
                out = _element(context, builder, weight_type, weight_value, [ir.Constant(first.type, h), first])
                builder.store(builder.fmul(_column_sums(builder, sums[h]), factor),
                              builder.bitcast(out, _VECTOR.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(keys, live, n, query, scale, weight, dim), codegen


@intrinsic
def accumulate(typingctx, values, live, n, weight, acc, dim):
    """`acc`[h] += sum over j < n of `weight`[h, j] x `values`[live[j]] for 3 heads (`acc`: (3, dim), float32),
    `BLOCK` vectors of the dimensions at a time, their accumulators in registers over the columns."""
    if not _typed(dim, values) or acc.dtype != types.float32:
        return None
    vectors = dim.literal_value // LANES

    def codegen(context, builder, signature, args):
        values_value, live_value, n_value, weight_value, acc_value, _ = args
        values_type, live_type, weight_type, acc_type = (signature.args[i] for i in (0, 1, 3, 4))
        zero = ir.Constant(ir.IntType(64), 0)
        for start in range(0, vectors, BLOCK):
            blocks = range(start, min(vectors, start + BLOCK))
            rows = [_element(context, builder, acc_type, acc_value, [ir.Constant(ir.IntType(64), h), zero])
                    for h in range(3)]
            slots = {}  # allocas that LLVM promotes to registers: the running sums over the loop
            for h in range(3):
                for b in blocks:
                    slots[h, b] = cgutils.alloca_once(builder, _VECTOR)
                    builder.store(_load(builder, rows[h], types.float32, b * LANES), slots[h, b])
            with cgutils.for_range(builder, n_value) as loop:
                column = builder.load(_element(context, builder, live_type, live_value, [loop.index]))
                base = _element(context, builder, values_type, values_value, [column, zero])
                value = {b: _load(builder, base, values_type.dtype, b * LANES) for b in blocks}
                for h in range(3):
                    w = _splat(builder, builder.load(_element(context, builder, weight_type, weight_value,
                                                              [ir.Constant(loop.index.type, h), loop.index])))
                    for b in blocks:
                        builder.store(_fma(builder, w, value[b], builder.load(slots[h, b])), slots[h, b])
            for h in range(3):
                for b in blocks:
                    out = builder.gep(rows[h], [ir.Constant(ir.IntType(64), b * LANES)])
                    builder.store(builder.load(slots[h, b]), builder.bitcast(out, _VECTOR.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.none(values, live, n, weight, acc, dim), codegen


GROUP = 3
"""Query heads read together (the kernel spells out three): each key and value read serves them all. Other group
sizes are padded with zero heads (SmolLM2 and Llama 3 use 3 and 4 query heads per key/value head)."""

CHUNK = 32
"""Live columns scored together: their weights' exponentials are then one vectorised loop."""

TASKS = 4
"""(row, key/value head) pairs per parallel task: each task allocates its scratch arrays once."""

VECTORS = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
"""Whether head sizes of 64 and 128 take the vector code (on a CPU that holds a 16-float vector in one register);
else, and for other head sizes, numba's loops."""

LABEL = f"one pass (numba, {CHUNK}-column chunks{', 16-lane vectors' if VECTORS else ''})"
"""The kernel as the run's info names it: another way of summing is another label (texts may differ)."""


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def _scores(keys, live, n, q, scale, weight, vectors):
    """`weight`[h, j] = scale x q[h] . keys[live[j]] for j < n (`scores`, or loops)."""
    dim = q.shape[1]
    if vectors and dim == 64:
        scores(keys, live, n, q, scale, weight, 64)  # type: ignore[call-arg]  # numba supplies the typing context
    elif vectors and dim == 128:
        scores(keys, live, n, q, scale, weight, 128)  # type: ignore[call-arg]
    else:
        for j in range(n):
            c = live[j]
            s0 = s1 = s2 = np.float32(0.0)
            for d in range(dim):
                k = widen(keys[c, d])
                s0 += q[0, d] * k
                s1 += q[1, d] * k
                s2 += q[2, d] * k
            weight[0, j], weight[1, j], weight[2, j] = s0 * scale, s1 * scale, s2 * scale


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def _accumulate(values, live, n, weight, acc, vectors):
    """`acc`[h] += sum over j < n of weight[h, j] x values[live[j]] (`accumulate`, or loops)."""
    dim = acc.shape[1]
    if vectors and dim == 64:
        accumulate(values, live, n, weight, acc, 64)  # type: ignore[call-arg]
    elif vectors and dim == 128:
        accumulate(values, live, n, weight, acc, 128)  # type: ignore[call-arg]
    else:
        for j in range(n):
            c = live[j]
            p0, p1, p2 = weight[0, j], weight[1, j], weight[2, j]
            for d in range(dim):
                v = widen(values[c, d])
                acc[0, d] += p0 * v
                acc[1, d] += p1 * v
                acc[2, d] += p2 * v


@numba.njit(parallel=True, fastmath=FLAGS, cache=True)
def _attend(query, keys, values, key_at, value_at, capacity, kv_heads, mask, starts, scale, out, vectors, source,
            until, places):
    """`out` (rows, heads, dim) = softmax(scale x query . keys) . values, per (row, key/value head) pair and group of
    three of its query heads. `query` and `out` are float32 or bfloat16 patterns (int16); `keys` and `values` are
    (pairs x capacity, dim) buffers of either, in which the cache's first pair's first column is row `key_at` and
    `value_at`; row r's keys and values are the cache's row `places`[r]; `mask` (rows, columns) names the columns
    each row reads, none before `starts`[r] (its left padding, not even tested); `vectors`: see `VECTORS`. Row r
    reads its columns before `until`[r] from the cache's row `source`[r], which holds the same keys and values
    there."""
    rows, heads, dim = query.shape
    columns = mask.shape[1]
    group = heads // kv_heads
    groups = (group + GROUP - 1) // GROUP
    tasks = rows * kv_heads * groups
    for block in numba.prange((tasks + TASKS - 1) // TASKS):
        q = np.empty((GROUP, dim), dtype=np.float32)  # the group's query heads, widened; past `width` zero heads
        top = np.empty(GROUP, dtype=np.float32)  # running maximum, sum of weights and weighted sum per head
        total = np.empty(GROUP, dtype=np.float32)
        acc = np.empty((GROUP, dim), dtype=np.float32)
        weight = np.empty((GROUP, CHUNK), dtype=np.float32)
        power = np.empty((GROUP, CHUNK), dtype=np.int32)  # 2**n's float32 bits
        scales = power.view(np.float32)  # the same powers of 2, read as floats
        live_keys = np.empty(CHUNK, dtype=np.int64)  # the rows of `keys` and `values` a chunk reads
        live_values = np.empty(CHUNK, dtype=np.int64)
        for task in range(block * TASKS, min(tasks, block * TASKS + TASKS)):
            pair = task // groups
            first = (task - pair * groups) * GROUP  # of the pair's query heads
            row = pair // kv_heads
            kv_head = pair - row * kv_heads
            head = kv_head * group + first  # in the row's query heads
            place = places[row]
            own = (place * kv_heads + kv_head) * capacity
            own_key, own_value = key_at + own, value_at + own  # column 0's row in the buffers
            shift = (source[row] - place) * kv_heads * capacity  # to the same head's pair in the source row
            bound = until[row]
            width = min(GROUP, group - first)
            for h in range(GROUP):
                for d in range(dim):
                    q[h, d] = widen(query[row, head + h, d]) if h < width else np.float32(0.0)
            top[:] = -np.inf
            total[:] = 0.0
            acc[:] = 0.0
            column = starts[row]
            while True:
                n = 0
                while column < columns and n < CHUNK:
                    if mask[row, column]:
                        at = shift if column < bound else 0
                        live_keys[n], live_values[n] = own_key + at + column, own_value + at + column
                        n += 1
                    column += 1
                if n == 0:
                    break
                for j in range(n, CHUNK):  # the vector code scores columns 16 at a time: a real one past the last
                    live_keys[j] = live_keys[n - 1]
                _scores(keys, live_keys, n, q, scale, weight, vectors)
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
                _accumulate(values, live_values, n, weight, acc, vectors)
            for h in range(width):
                inverse = np.float32(1.0) / total[h] if total[h] > 0 else np.float32(0.0)  # no live column: zeros
                for d in range(dim):
                    out[row, head + h, d] = narrow(acc[h, d] * inverse, out.dtype)


def cache_rows(t: torch.Tensor) -> tuple[np.ndarray, int, int] | None:
    """`t` (rows, kv heads, columns, dim) as a (pairs x capacity, dim) array over its whole storage (a bfloat16 one
    as its int16 patterns), the row its first pair's first column is, and the capacity of a pair, when it is such a
    view of a contiguous buffer of its dtype (as the decode cache's keys and values are); else None."""
    rows, kv_heads, columns, dim = t.shape
    if (t.dtype not in READS or not columns or t.stride(3) != 1 or t.stride(2) != dim or t.stride(1) % dim
            or t.stride(1) < columns * dim or t.stride(0) != kv_heads * t.stride(1)):
        return None
    capacity = t.stride(1) // dim
    pair, within = divmod(int(t.storage_offset()), capacity * dim)
    pairs = t.untyped_storage().nbytes() // t.element_size() // (capacity * dim)
    if within % dim or within // dim + columns > capacity or pair + rows * kv_heads > pairs:
        return None
    whole = t.new_empty(0).set_(t.untyped_storage(), 0, (pairs * capacity, dim), (dim, 1))
    return as_array(whole), pair * capacity + within // dim, capacity


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
           out: torch.Tensor, shared: tuple[torch.Tensor, torch.Tensor] | None = None) -> bool:
    """`out` (rows, heads, dim) = one-token attention of `query` (rows, heads, dim) over the columns `mask` (rows,
    columns; boolean, contiguous) keeps of the cache views `key` and `value` (rows, key/value heads, columns, dim);
    with `shared` (source, until: rows each), row r reads its columns before until[r] from row source[r] (rows of
    one prompt then read one copy of it). False, with nothing computed, when the cache is laid out otherwise."""
    keys, values = cache_rows(key), cache_rows(value)
    if keys is None or values is None or keys[2] != values[2]:
        return False
    rows_mask = mask.numpy()
    attend_rows(as_array(query), keys[0], values[0], keys[1], values[1], keys[2], key.shape[1], rows_mask,
                starts_of(rows_mask), np.float32(scale), as_array(out), *sharing(shared, len(query)),
                np.arange(len(query)))
    return True


def starts_of(mask: np.ndarray) -> np.ndarray:
    """Each row's first column that `mask` (rows, columns) keeps (0 for a row it keeps none of)."""
    return mask.argmax(axis=1)


def sharing(shared: tuple[torch.Tensor, torch.Tensor] | None, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`attend`'s `shared` for `rows` rows as the kernel reads it: each row's source and bound (none shared:
    itself, 0)."""
    if shared is None:
        return np.arange(rows), np.zeros(rows, np.int64)
    if not len(shared[0]) == len(shared[1]) == rows:
        raise ValueError(f"shared prompts name {len(shared[0])} and {len(shared[1])} rows for a step of {rows}")
    return shared[0].numpy(), shared[1].numpy()


def attend_rows(query: np.ndarray, keys: np.ndarray, values: np.ndarray, key_at: int, value_at: int, capacity: int,
                kv_heads: int, mask: np.ndarray, starts: np.ndarray, scale: np.float32, out: np.ndarray,
                source: np.ndarray, until: np.ndarray, places: np.ndarray) -> None:
    """`_attend` on arrays as it names them (the fused step keeps them from call to call), on torch's threads."""
    with parallel_call():
        _attend(query, keys, values, key_at, value_at, capacity, kv_heads, mask, starts, scale, out, VECTORS, source,
                until, places)
