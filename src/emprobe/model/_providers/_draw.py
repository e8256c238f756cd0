"""One token per row drawn from its logits in one compiled pass (numba): softmax weights and the inverse CDF of a
uniform draw, without the float32 copies, exponentials and cumulative sums torch makes of a (rows, vocabulary)
matrix at every step.

It picks what `_decode._inverse_cdf` picks over torch's weights, summed in blocks the same way: only the last bit of
an exponential or the order of a sum differs, which moves a token only when a draw falls that close to the edge
between two tokens.
"""

import numba
import numpy as np
import torch

from emprobe.model._providers._numba_math import DIVIDING, READS, as_array, exp_negative, parallel_call, widen


@numba.njit(inline="always", fastmath=DIVIDING, error_model="numpy", cache=True)
def _weight(x, peak):
    """exp(x - peak), at least exp(-87) (a dropped, -inf, logit too): the whole vocabulary's such weights sum to
    under 1e-33 against the peak's 1, too little to move a float32 draw."""
    return exp_negative(x - peak)


@numba.njit(parallel=True, fastmath=DIVIDING, error_model="numpy", cache=True)
def _draw_rows(scores, divisors, draws, block, out):
    """`out[r]` = the first token whose running sum of exp(scores / divisor - their maximum) exceeds `draws[r]` x
    the row's total, the sums taken per block of `block` tokens and then inside the chosen block."""
    rows, vocab = scores.shape
    blocks = (vocab + block - 1) // block
    for r in numba.prange(rows):
        divisor = divisors[r]
        peak = np.float32(-np.inf)
        for j in range(vocab):
            peak = max(peak, widen(scores[r, j]))
        peak /= divisor  # the largest quotient: rounded division keeps the order
        ends = np.empty(blocks, dtype=np.float32)
        total = np.float32(0.0)
        for b in range(blocks):
            summed = np.float32(0.0)
            for j in range(b * block, min(vocab, (b + 1) * block)):
                summed += _weight(widen(scores[r, j]) / divisor, peak)
            total += summed
            ends[b] = total
        target = np.float32(draws[r] * total)
        chosen = blocks - 1
        for b in range(blocks):
            if ends[b] > target:
                chosen = b
                break
        running = ends[chosen - 1] if chosen > 0 else np.float32(0.0)
        last = min(vocab, (chosen + 1) * block) - 1
        token = last
        for j in range(chosen * block, last + 1):
            running += _weight(widen(scores[r, j]) / divisor, peak)
            if running > target:
                token = j
                break
        out[r] = token


def draw(scores: torch.Tensor, divisors: torch.Tensor, draws: torch.Tensor, block: int) -> torch.Tensor | None:
    """Tokens drawn from float32 or bfloat16 CPU `scores` (rows, vocabulary) divided per row by `divisors`, one
    uniform `draws[r]` each; None for tensors it does not read."""
    if scores.device.type != "cpu" or scores.dtype not in READS or scores.dim() != 2:
        return None
    out = torch.empty(len(scores), dtype=torch.long)
    with parallel_call():
        _draw_rows(as_array(scores.contiguous()), divisors.to(torch.float32).numpy(),
                   draws.to(torch.float32).numpy(), block, out.numpy())
    return out
