"""Scalar helpers for emprobe's numba kernels: bfloat16 read as 16-bit patterns (numpy has no bfloat16) and widened
to float32 or rounded back, and an exponential that vectorises."""

import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

READS = {torch.float32: torch.float32, torch.bfloat16: torch.int16}
"""The tensors the kernels read, and how: a bfloat16 one as its 16-bit patterns."""

FLAGS = {"reassoc", "contract", "arcp", "nsz"}
"""The kernels' math flags: sums may be reordered and divisions taken as products by reciprocals; inf and NaN are
kept (a running maximum starts at -inf)."""

DIVIDING = FLAGS - {"arcp"}
"""The flags of kernels whose divisions must round as torch's do (true divisions, not products by reciprocals)."""

LOCK = threading.Lock()
"""Held around every parallel kernel call (`parallel_call`): numba's fallback threading layer (workqueue) aborts on
concurrent parallel calls, and each call uses every thread anyway."""


class _ParallelCall:
    """`LOCK` held, and numba's threads in the calling thread as many as torch's (set only when that changes: numba's
    setter takes longer than the small kernels between a decode step's matmuls)."""

    def __init__(self) -> None:
        self.threads = threading.local()

    def __enter__(self) -> None:
        LOCK.acquire()
        try:
            wanted = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
            if getattr(self.threads, "set", None) != wanted:
                numba.set_num_threads(wanted)
                self.threads.set = wanted
        except BaseException:
            LOCK.release()
            raise

    def __exit__(self, *exception: object) -> None:
        LOCK.release()


_PARALLEL_CALL = _ParallelCall()


def parallel_call() -> _ParallelCall:
    """Around a parallel kernel's call (`with parallel_call():`): `LOCK` held, numba's threads as many as torch's."""
    return _PARALLEL_CALL

LOG2E = np.float32(1.4426950408889634)
LN2_HIGH, LN2_LOW = np.float32(0.693359375), np.float32(-2.1219444005469057e-4)
"""ln 2 split in two so that `n x LN2_HIGH` is exact for the exponents used."""


def as_array(t: torch.Tensor) -> np.ndarray:
    """A float32 or bfloat16 CPU tensor as a numpy view (a bfloat16 one as its int16 patterns)."""
    return t.view(READS[t.dtype]).numpy()


@intrinsic
def _bfloat16_bits(typingctx, bits):
    """The float32 whose upper half is the 16-bit pattern `bits` (a bfloat16 read as int16): one shift, no rounding."""
    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _rounded_bits(typingctx, x):
    """The bfloat16 nearest to the float32 `x` (ties to even) as its 16-bit pattern; a NaN gives the quiet NaN
    0x7FC0, as torch's conversion does."""
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(bits, builder.add(odd, ir.Constant(i32, 0x7FFF))), ir.Constant(i32, 16))
        nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.trunc(builder.select(nan, ir.Constant(i32, 0x7FC0), rounded), ir.IntType(16))

    return types.int16(x), codegen


@intrinsic
def float_of_bits(typingctx, bits):
    """The float32 whose bits are the int32 `bits` (a power of 2 built from its exponent, say)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen  # an int64 argument is cast to int32 first


def widen(x):
    """`x` as a float32: itself for a float32, a bfloat16's 16-bit pattern widened (compiled code only)."""
    raise NotImplementedError("compiled code only")


def narrow(x, dtype):
    """The float32 `x` as an element of an array of `dtype`: itself for float32, the nearest bfloat16's pattern for
    int16 (compiled code only)."""
    raise NotImplementedError("compiled code only")


@overload(widen, inline="always")
def _widen(x):
    if x == types.float32:
        return lambda x: x
    if x == types.int16:
        return lambda x: _bfloat16_bits(x)  # type: ignore[call-arg]  # numba supplies the typing context
    return None


@overload(narrow, inline="always")
def _narrow(x, dtype):
    if not isinstance(dtype, types.DType):
        return None
    if dtype.dtype == types.float32:
        return lambda x, dtype: np.float32(x)
    if dtype.dtype == types.int16:
        return lambda x, dtype: _rounded_bits(np.float32(x))  # type: ignore[call-arg]
    return None


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def exp_parts(x):
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


@numba.njit(inline="always", fastmath=FLAGS, cache=True)
def exp_negative(x):
    """exp(x) for x <= 0 as a float32 (exp(-87) for anything lower), from `exp_parts`: loops of it vectorise."""
    m, n = exp_parts(x)
    return m * float_of_bits((n + np.int32(127)) << np.int32(23))  # type: ignore[call-arg]  # numba supplies the context
