"""Sample-size planning: power for a two-arm difference, and precision for a single rate."""

from __future__ import annotations

import math

from scipy import optimize, stats

from ._intervals import _z


def _check_prob(name: str, value: float, *, open_interval: bool = False) -> None:
    ok = 0.0 < value < 1.0 if open_interval else 0.0 <= value <= 1.0
    if not ok:
        raise ValueError(f"{name} must be in {'(0, 1)' if open_interval else '[0, 1]'}, got {value}")


def samples_per_arm(
    p1: float,
    p2: float,
    power: float = 0.8,
    alpha: float = 0.05,
    two_sided: bool = True,
    *,
    continuity_correction: bool = False,
) -> int:
    """Samples per arm for the pooled two-proportion z-test to detect p2 vs p1 with the given power.

    Standard normal-approximation formula (Fleiss): n = (z_a sqrt(2 pbar qbar) + z_b sqrt(p1 q1 + p2 q2))^2
    / (p1 - p2)^2. With `continuity_correction` the Fleiss-Tytun-Ury correction is applied, which roughly
    matches the power of Fisher's exact test (as used by `compare`), at the price of more samples.
    With only 1-4 expected events in an arm the simulated z-test power runs ~4-6 points above target.
    """
    _check_prob("p1", p1)
    _check_prob("p2", p2)
    _check_prob("power", power, open_interval=True)
    _check_prob("alpha", alpha, open_interval=True)
    if p1 == p2:
        raise ValueError("p1 and p2 must differ")
    z_a = float(stats.norm.isf(alpha / 2.0 if two_sided else alpha))
    z_b = float(stats.norm.ppf(power))
    p_bar = (p1 + p2) / 2.0
    delta = abs(p2 - p1)
    root = z_a * math.sqrt(2.0 * p_bar * (1.0 - p_bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    n = root**2 / delta**2
    if continuity_correction:
        n = n / 4.0 * (1.0 + math.sqrt(1.0 + 4.0 / (n * delta))) ** 2
    return max(1, math.ceil(n - 1e-9))


def wilson_halfwidth(p: float, n: float, confidence: float = 0.95) -> float:
    """Half-width of the Wilson interval when the observed rate is exactly p in n samples."""
    z = _z(confidence)
    return z / (n + z * z) * math.sqrt(p * (1.0 - p) * n + z * z / 4.0)


def samples_for_halfwidth(p: float, halfwidth: float, confidence: float = 0.95) -> int:
    """Smallest n whose Wilson interval at observed rate p has half-width <= `halfwidth`.

    The Wilson half-width decreases monotonically in n, so the continuous root is found with brentq and
    then moved to the first integer that meets the target.
    """
    _check_prob("p", p)
    if halfwidth <= 0.0:
        raise ValueError(f"halfwidth must be positive, got {halfwidth}")
    if wilson_halfwidth(p, 1, confidence) <= halfwidth:
        return 1
    hi = 2.0
    while wilson_halfwidth(p, hi, confidence) > halfwidth:
        hi *= 2.0
    root = optimize.brentq(lambda n: wilson_halfwidth(p, n, confidence) - halfwidth, 1.0, hi, xtol=1e-6)
    n = max(1, math.floor(root))
    while wilson_halfwidth(p, n, confidence) > halfwidth:
        n += 1
    while n > 1 and wilson_halfwidth(p, n - 1, confidence) <= halfwidth:
        n -= 1
    return n
