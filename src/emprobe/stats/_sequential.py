"""Sequential rules for sampling in rounds: a group-sequential two-arm test and a half-width stopping rule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import integrate, optimize, stats

from ._intervals import IntervalMethod, Rate, _check_confidence, rate

Decision = Literal["continue", "different", "not_different"]

_GRID = 801  # odd, for Simpson's rule


def _of_spent(t: float, alpha: float) -> float:
    """Two-sided alpha spent by information fraction t: Lan-DeMets O'Brien-Fleming, alpha/2 per side."""
    return float(4.0 * stats.norm.sf(stats.norm.isf(alpha / 4.0) / math.sqrt(t)))


def _crossing(
    b: float, grid: NDArray[np.float64], density: NDArray[np.float64], sd: float, target: float = 0.0
) -> float:
    """Probability that a path still inside at the last look ends beyond +-b after an N(0, sd^2) step,
    minus `target`."""
    tail = stats.norm.sf((b - grid) / sd) + stats.norm.cdf((-b - grid) / sd)
    return float(integrate.simpson(density * tail, x=grid)) - target


@lru_cache(maxsize=256)
def _boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """Z boundaries for the given information fractions (cached: they depend on nothing else)."""
    bounds: list[float] = []
    prev_t, prev_spent = 0.0, 0.0
    grid: NDArray[np.float64] | None = None  # Brownian-motion scale W = Z sqrt(t), continuation region
    density: NDArray[np.float64] | None = None  # sub-density of W on `grid` for paths not yet stopped
    for t in fractions:
        step = t - prev_t
        target = max(_of_spent(t, alpha) - prev_spent, 0.0)
        hi = 40.0 * math.sqrt(t)
        if grid is None or density is None:
            b = float(stats.norm.isf(target / 2.0)) * math.sqrt(t) if target > 0 else hi
        else:
            args = (grid, density, math.sqrt(step), target)
            b = hi if _crossing(hi, *args) >= 0.0 else optimize.brentq(_crossing, 0.0, hi, args=args, xtol=1e-10)
        new_grid = np.linspace(-b, b, _GRID)
        if grid is None or density is None:
            density = stats.norm.pdf(new_grid, scale=math.sqrt(t))
        else:
            kernel = stats.norm.pdf(new_grid[:, None] - grid[None, :], scale=math.sqrt(step))
            density = integrate.simpson(kernel * density[None, :], x=grid, axis=1)
        grid = new_grid
        bounds.append(b / math.sqrt(t))
        prev_t, prev_spent = t, prev_spent + target
    return tuple(bounds)


def obrien_fleming_boundaries(fractions: Sequence[float], alpha: float = 0.05) -> list[float]:
    """Two-sided |Z| boundaries from the Lan-DeMets O'Brien-Fleming spending function.

    Spending per side is 2 - 2 Phi(z_{alpha/4} / sqrt(t)); the boundary at each look solves for the alpha
    left to spend by recursive numerical integration of the stopped Brownian motion (Armitage et al.).
    `fractions` are increasing information fractions in (0, 1]; all of alpha is spent only at t = 1.
    """
    ts = tuple(float(t) for t in fractions)
    if not ts or any(not 0.0 < t <= 1.0 for t in ts) or any(b <= a for a, b in zip(ts, ts[1:], strict=False)):
        raise ValueError("fractions must be strictly increasing values in (0, 1]")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return list(_boundaries(ts, float(alpha)))


def pooled_z(k1: int, n1: int, k2: int, n2: int) -> float:
    """Pooled two-proportion z statistic for p2 - p1 (0 when no, or every, sample is an event)."""
    pooled = (k1 + k2) / (n1 + n2)
    var = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)
    return 0.0 if var <= 0.0 else (k2 / n2 - k1 / n1) / math.sqrt(var)


class SequentialComparison:
    """Group-sequential two-arm test with O'Brien-Fleming-type alpha spending (Lan-DeMets).

    Call `look` with cumulative counts after each round. It stops "different" when the pooled z statistic
    crosses that look's boundary and "not_different" at the last look; the overall two-sided false-positive
    rate over all looks is alpha. Looks are taken as equally spaced unless `max_n` (planned samples per arm)
    is given, in which case the information fraction is min(n1, n2) / max_n, the boundaries adapt to the
    actual spacing, and the look reaching max_n (or look `max_looks`) is final.
    """

    def __init__(self, alpha: float = 0.05, max_looks: int = 5, max_n: int | None = None) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if max_looks < 1:
            raise ValueError("max_looks must be at least 1")
        if max_n is not None and max_n < 1:
            raise ValueError("max_n must be positive")
        self.alpha = alpha
        self.max_looks = max_looks
        self.max_n = max_n
        self.fractions: list[float] = []
        self.z_values: list[float] = []
        self.boundaries: list[float] = []
        self.decision: Decision = "continue"
        self._last_n = (0, 0)

    def look(self, k1: int, n1: int, k2: int, n2: int) -> Decision:
        """Record cumulative counts for both arms and decide: continue, different, or not_different."""
        if self.decision != "continue":
            raise ValueError(f"the sequential test has already stopped ({self.decision})")
        if not (0 <= k1 <= n1 and 0 <= k2 <= n2) or n1 == 0 or n2 == 0:
            raise ValueError("need 0 <= k <= n and n > 0 in both arms")
        if n1 < self._last_n[0] or n2 < self._last_n[1] or (n1, n2) == self._last_n:
            raise ValueError("counts are cumulative: each look needs more samples than the last")
        index = len(self.fractions) + 1
        if self.max_n is None:
            t = index / self.max_looks
        else:
            t = min(1.0, min(n1, n2) / self.max_n)
            if index == self.max_looks:
                t = 1.0
        if self.fractions and t <= self.fractions[-1]:
            raise ValueError("information did not grow since the last look")
        self.fractions.append(t)
        self._last_n = (n1, n2)
        bound = obrien_fleming_boundaries(self.fractions, self.alpha)[-1]
        z = pooled_z(k1, n1, k2, n2)
        self.z_values.append(z)
        self.boundaries.append(bound)
        if abs(z) >= bound:
            self.decision = "different"
        elif t >= 1.0:
            self.decision = "not_different"
        return self.decision


def halfwidth_reached(
    k: int, n: int, halfwidth: float, confidence: float = 0.95, method: IntervalMethod = "wilson"
) -> bool:
    """True when the interval for k/n has half-width (high - low) / 2 <= `halfwidth`."""
    r = rate(k, n, method=method, confidence=confidence)
    return n > 0 and (r.high - r.low) / 2.0 <= halfwidth


def until_halfwidth(
    sample: Callable[[int], int],
    halfwidth: float,
    *,
    batch: int,
    max_n: int,
    confidence: float = 0.95,
    method: IntervalMethod = "wilson",
) -> Rate:
    """Sample in rounds (`sample(m)` returns the events among m new samples) until the half-width target.

    Stops when `halfwidth_reached` or n reaches `max_n`. The interval reported is the fixed-n one: stopping
    on precision (not on the estimate crossing a threshold) shifts coverage only slightly, which the tests
    check by simulation; it is not an anytime-valid confidence sequence.
    """
    _check_confidence(confidence)
    if batch < 1 or max_n < 1 or halfwidth <= 0:
        raise ValueError("batch, max_n and halfwidth must be positive")
    k = n = 0
    while n < max_n:
        m = min(batch, max_n - n)
        events = int(sample(m))
        if not 0 <= events <= m:
            raise ValueError(f"sample({m}) returned {events} events")
        k, n = k + events, n + m
        if halfwidth_reached(k, n, halfwidth, confidence, method):
            break
    return rate(k, n, method=method, confidence=confidence)
