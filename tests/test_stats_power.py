"""Sample-size planning: hand formulas, and simulated power of the tests the plan is for."""

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from emprobe.stats import samples_for_halfwidth, samples_per_arm, wilson, wilson_halfwidth

ND = NormalDist()


def _fleiss_by_hand(p1: float, p2: float, power: float, alpha: float) -> int:
    za, zb = ND.inv_cdf(1 - alpha / 2), ND.inv_cdf(power)
    pbar = (p1 + p2) / 2
    top = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(top**2 / (p1 - p2) ** 2)


def _pooled_z_power(p1: float, p2: float, n: int, alpha: float, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    k1, k2 = rng.binomial(n, p1, reps), rng.binomial(n, p2, reps)
    pooled = (k1 + k2) / (2 * n)
    se = np.sqrt(pooled * (1 - pooled) * 2 / n)
    z = np.divide((k2 - k1) / n, se, out=np.zeros(reps), where=se > 0)
    return float(np.mean(np.abs(z) >= ND.inv_cdf(1 - alpha / 2)))


def _fisher_power(p1: float, p2: float, n: int, reps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    pairs = np.stack([rng.binomial(n, p1, reps), rng.binomial(n, p2, reps)], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)  # few distinct tables at tiny rates
    p = np.array([stats.fisher_exact([[a, n - a], [b, n - b]]).pvalue for a, b in uniq])
    return float(np.mean(p[inverse.ravel()] <= 0.05))


def test_samples_per_arm_hand_values():
    assert samples_per_arm(0.01, 0.02) == 2319  # the textbook 1% vs 2% figure
    cases = [(0.0007, 0.0068, 0.8, 0.05), (0.0042, 0.0096, 0.9, 0.01), (0.3, 0.2, 0.8, 0.05)]
    for p1, p2, power, alpha in cases:
        assert samples_per_arm(p1, p2, power=power, alpha=alpha) == _fleiss_by_hand(p1, p2, power, alpha)
    assert samples_per_arm(0.0007, 0.0068) == samples_per_arm(0.0068, 0.0007)
    assert samples_per_arm(0.01, 0.02, two_sided=False) < samples_per_arm(0.01, 0.02)
    assert samples_per_arm(0.01, 0.02, continuity_correction=True) > samples_per_arm(0.01, 0.02)
    for bad in [(0.01, 0.01), (-0.1, 0.2), (0.1, 1.2)]:
        with pytest.raises(ValueError):
            samples_per_arm(*bad)
    with pytest.raises(ValueError):
        samples_per_arm(0.1, 0.2, power=1.0)


@pytest.mark.parametrize(
    ("p1", "p2", "power"), [(0.0042, 0.0096, 0.8), (0.01, 0.02, 0.8), (0.005, 0.01, 0.9)]
)
def test_simulated_power_of_pooled_z_test(p1, p2, power):
    n = samples_per_arm(p1, p2, power=power)
    observed = _pooled_z_power(p1, p2, n, 0.05, reps=20000, seed=1)
    print(f"z-test power {p1} vs {p2}, n={n}: {observed:.3f} (target {power})")
    assert abs(observed - power) <= 0.03


@pytest.mark.parametrize(("p1", "p2", "power"), [(0.0007, 0.0068, 0.8), (0.001, 0.005, 0.9)])
def test_simulated_power_at_tiny_rates(p1, p2, power):
    # Only 1-4 expected events in the base arm: the discrete z-test overshoots the target by a few points.
    n = samples_per_arm(p1, p2, power=power)
    observed = _pooled_z_power(p1, p2, n, 0.05, reps=20000, seed=2)
    print(f"z-test power {p1} vs {p2}, n={n}: {observed:.3f} (target {power})")
    assert power - 0.01 <= observed <= power + 0.07


def test_continuity_correction_matches_fisher_power():
    n_cc = samples_per_arm(0.0042, 0.0096, continuity_correction=True)
    n = samples_per_arm(0.0042, 0.0096)
    with_cc = _fisher_power(0.0042, 0.0096, n_cc, reps=2000, seed=3)
    without = _fisher_power(0.0042, 0.0096, n, reps=2000, seed=4)
    print(f"Fisher power at n_cc={n_cc}: {with_cc:.3f}; at n={n}: {without:.3f}")
    assert abs(with_cc - 0.8) <= 0.04
    assert without < 0.8


def test_samples_for_halfwidth():
    # p = 0.5: half-width z / (2 sqrt(n + z^2)), so n = ceil((z / 2h)^2 - z^2).
    z = ND.inv_cdf(0.975)
    assert samples_for_halfwidth(0.5, 0.1) == math.ceil((z / 0.2) ** 2 - z**2)
    for p, h in [(0.0007, 0.001), (0.0068, 0.002), (0.01, 0.0025), (0.0, 0.001)]:
        n = samples_for_halfwidth(p, h)
        assert wilson_halfwidth(p, n) <= h < wilson_halfwidth(p, n - 1)
    # At an integer count the planned half-width is the real Wilson one.
    n = samples_for_halfwidth(0.01, 0.002)
    n_round = math.ceil(n / 100) * 100
    low, high = wilson(n_round // 100, n_round)
    assert (high - low) / 2 <= 0.002
    assert samples_for_halfwidth(0.3, 0.6) == 1
    with pytest.raises(ValueError):
        samples_for_halfwidth(0.01, 0.0)
