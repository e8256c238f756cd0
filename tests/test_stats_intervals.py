"""Binomial intervals: hand-computed values, edge cases, and coverage by simulation at tiny rates."""

from statistics import NormalDist

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import stats

from emprobe.stats import Rate, clopper_pearson, cluster_interval, design_effect, rate, wilson

Z95 = NormalDist().inv_cdf(0.975)


def _interval_table(fn, ks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Low/high arrays for each k in `ks`, calling the public function once per distinct k."""
    uniq, inverse = np.unique(ks, return_inverse=True)
    bounds = np.array([fn(int(k), n) for k in uniq])
    return bounds[inverse, 0], bounds[inverse, 1]


def test_wilson_hand_values():
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)  # 0.2775
    assert wilson(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-5)
    low, high = wilson(10, 10)
    assert high == 1.0 and low == pytest.approx(10 / (10 + Z95**2), abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(1, 7), (3, 2000), (14, 20000), (0, 1575), (19, 20)])
def test_wilson_matches_scipy(k, n):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
    ci99 = stats.binomtest(k, n).proportion_ci(confidence_level=0.99, method="wilson")
    assert wilson(k, n, confidence=0.99) == pytest.approx((ci99.low, ci99.high), abs=1e-9)


@pytest.mark.parametrize("n", [1, 10, 2000, 20000])
def test_clopper_pearson_at_the_edges(n):
    low, high = clopper_pearson(0, n)
    assert low == 0.0
    assert high == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    low, high = clopper_pearson(n, n)
    assert high == 1.0
    assert low == pytest.approx(0.025 ** (1 / n), rel=1e-9)


def test_clopper_pearson_matches_scipy_exact():
    for k, n in [(1, 10), (3, 2000), (14, 20000)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.9, method="exact")
        assert clopper_pearson(k, n, confidence=0.9) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_empty_and_invalid():
    assert wilson(0, 0) == (0.0, 1.0)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    for bad in [(-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            wilson(*bad)
        with pytest.raises(ValueError):
            clopper_pearson(*bad)
    with pytest.raises(ValueError):
        wilson(1, 5, confidence=1.0)


def test_rate_record():
    r = rate(0, 0)
    assert (r.rate, r.low, r.high, r.method) == (0.0, 0.0, 1.0, "wilson")
    r = rate(7, 1000, method="clopper_pearson")
    assert isinstance(r, Rate)
    assert r.rate == 0.007 and (r.low, r.high) == clopper_pearson(7, 1000)
    with pytest.raises(ValidationError):
        r.k = 3  # frozen
    with pytest.raises(ValueError):
        rate(1, 2, method="wald")  # type: ignore[arg-type]


# Exact coverage from enumerating k is printed alongside to show the simulation is reading it right.
@pytest.mark.parametrize(("p", "n"), [(0.001, 2000), (0.001, 20000), (0.01, 2000), (0.01, 20000)])
def test_coverage_by_simulation(p, n):
    draws = 4000
    ks = np.random.default_rng(12345).binomial(n, p, size=draws)
    covered = {}
    for name, fn in [("wilson", wilson), ("clopper_pearson", clopper_pearson)]:
        low, high = _interval_table(fn, ks, n)
        covered[name] = float(np.mean((low <= p) & (p <= high)))
        support = np.arange(0, int(n * p * 5) + 30)
        lows, highs = _interval_table(fn, support, n)
        exact = float(np.sum(stats.binom.pmf(support, n, p) * ((lows <= p) & (p <= highs))))
        print(f"{name} p={p} n={n}: simulated {covered[name]:.4f}, exact {exact:.4f}")
        assert abs(covered[name] - exact) < 0.015
    assert 0.93 <= covered["wilson"] <= 0.97
    # Clopper-Pearson is conservative by construction (98% at p=0.001, n=2000), so only the floor is asserted.
    assert covered["clopper_pearson"] >= 0.93
    assert covered["clopper_pearson"] >= covered["wilson"] - 0.005


def test_design_effect_hand_value():
    # p = 0.5, between-question variance 2/1 * (25 + 25) / 20^2 = 0.25, binomial 0.25 / 20 -> deff 20.
    assert design_effect([0, 10], [10, 10]) == pytest.approx(20.0)
    assert design_effect([5, 5, 5], [100, 100, 100]) == 1.0  # floored at 1
    assert design_effect([0, 0, 0], [10, 10, 10]) == 1.0
    with pytest.raises(ValueError):
        design_effect([1], [10])


def test_cluster_interval_widens_with_heterogeneity():
    ks, ns = [0, 0, 0, 12, 0, 0, 0, 8], [500] * 8
    naive = wilson(sum(ks), sum(ns))
    for method in ("design_effect", "bootstrap"):
        low, high = cluster_interval(ks, ns, method=method)
        assert low < naive[0] and high > naive[1]
        assert low <= sum(ks) / sum(ns) <= high
    # No events at all: nothing to estimate clustering from (deff = 1). The bootstrap returns plain Wilson;
    # the design-effect method uses Wilson with the t critical value on m - 1 = 4 df: upper = t^2 / (N + t^2).
    assert cluster_interval([0] * 5, [100] * 5, method="bootstrap") == wilson(0, 500)
    t4 = stats.t.isf(0.025, 4)
    assert cluster_interval([0] * 5, [100] * 5) == pytest.approx((0.0, t4**2 / (500 + t4**2)), abs=1e-12)
    with pytest.raises(ValueError):
        cluster_interval([1, 2], [10, 10], method="jackknife")  # type: ignore[arg-type]


def test_clustered_coverage_vs_naive():
    """Beta-binomial questions (mean 1%, ICC 0.02, 50 questions x 100 samples, deff ~3): clustered ~95%."""
    rng = np.random.default_rng(7)
    p, icc, m, per_q = 0.01, 0.02, 50, 100
    s = (1 - icc) / icc
    reps = 2000
    ks = rng.binomial(per_q, rng.beta(p * s, (1 - p) * s, size=(reps, m)))
    ns = [per_q] * m
    naive = design = boot = 0
    boot_reps = 400
    for r in range(reps):
        lo, hi = wilson(int(ks[r].sum()), per_q * m)
        naive += lo <= p <= hi
        lo, hi = cluster_interval(ks[r], ns, method="design_effect")
        design += lo <= p <= hi
        if r < boot_reps:
            lo, hi = cluster_interval(ks[r], ns, method="bootstrap", seed=r, n_boot=1000)
            boot += lo <= p <= hi
    naive, design, boot = naive / reps, design / reps, boot / boot_reps
    print(f"clustered coverage: naive wilson {naive:.3f}, design effect {design:.3f}, bootstrap {boot:.3f}")
    assert naive < 0.85
    assert 0.925 <= design <= 0.97
    # Percentile bootstrap over 50 questions is known to run a little short; it must still beat naive.
    assert boot >= 0.89
