"""Two-arm comparisons: Newcombe and Katz against hand formulas, exact tests, paired/stratified estimates."""

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from emprobe.stats import compare, compare_paired, exact_stratified_test

Z95 = NormalDist().inv_cdf(0.975)


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _newcombe_by_hand(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    (l1, u1), (l2, u2) = _wilson_by_hand(k1, n1), _wilson_by_hand(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    d = p2 - p1
    return d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def test_newcombe_published_example():
    # Newcombe (1998), example (a): 56/70 vs 48/80, method 10 gives 0.0524 to 0.3339.
    c = compare(48, 80, 56, 70)
    assert c.difference == pytest.approx(0.2)
    assert (c.diff_low, c.diff_high) == pytest.approx((0.0524, 0.3339), abs=5e-5)


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"), [(1, 1575, 11, 1575), (0, 2000, 7, 2000), (42, 4380, 19, 4520)]
)
def test_newcombe_against_formula(k1, n1, k2, n2):
    c = compare(k1, n1, k2, n2)
    assert (c.diff_low, c.diff_high) == pytest.approx(_newcombe_by_hand(k1, n1, k2, n2), abs=1e-12)
    assert c.diff_low <= c.difference <= c.diff_high


def test_katz_ratio_by_hand():
    c = compare(10, 1000, 30, 1000)
    se = math.sqrt(1 / 30 - 1 / 1000 + 1 / 10 - 1 / 1000)
    assert c.ratio == pytest.approx(3.0)
    assert (c.ratio_low, c.ratio_high) == pytest.approx((3 * math.exp(-Z95 * se), 3 * math.exp(Z95 * se)))
    assert not c.ratio_corrected


def test_katz_ratio_zero_cell_correction():
    c = compare(0, 2000, 14, 2000)
    assert c.ratio_corrected
    a, b, cc, d = 0.5, 2001, 14.5, 2001
    assert c.ratio == pytest.approx((cc / d) / (a / b))
    se = math.sqrt(1 / a - 1 / b + 1 / cc - 1 / d)
    assert c.ratio_low == pytest.approx(c.ratio * math.exp(-Z95 * se))
    assert math.isfinite(c.ratio_high) and c.ratio_low > 1.0


@pytest.mark.parametrize(
    ("k1", "n1", "k2", "n2"), [(1, 1575, 11, 1575), (42, 4380, 19, 4520), (3, 50, 3, 50)]
)
def test_fisher_p_value(k1, n1, k2, n2):
    c = compare(k1, n1, k2, n2)
    assert c.test == "fisher_exact"
    assert c.p_value == pytest.approx(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue, rel=1e-12)


def test_compare_rejects_empty_arm():
    with pytest.raises(ValueError):
        compare(0, 0, 1, 10)


def test_exact_stratified_single_question_is_fisher():
    for table in [(1, 1575, 11, 1575), (5, 20, 0, 25), (3, 50, 3, 50), (7, 9, 2, 12)]:
        k1, n1, k2, n2 = table
        expected = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue
        assert exact_stratified_test([k1], [n1], [k2], [n2]) == pytest.approx(expected, rel=1e-9)


def test_exact_stratified_against_brute_force():
    ks1, ns1, ks2, ns2 = [2, 0, 1, 4], [12, 10, 8, 15], [0, 3, 5, 6], [10, 10, 9, 15]
    laws = []
    for a, na, b, nb in zip(ks1, ns1, ks2, ns2, strict=True):
        t = a + b
        xs = range(max(0, t - nb), min(t, na) + 1)
        laws.append([(x, math.comb(na, x) * math.comb(nb, t - x) / math.comb(na + nb, t)) for x in xs])
    dist: dict[int, float] = {}
    for combo in itertools.product(*laws):
        s = sum(x for x, _ in combo)
        dist[s] = dist.get(s, 0.0) + math.prod(q for _, q in combo)
    p_obs = dist[sum(ks1)]
    expected = sum(q for q in dist.values() if q <= p_obs * (1 + 1e-7))
    assert exact_stratified_test(ks1, ns1, ks2, ns2) == pytest.approx(expected, rel=1e-9)


def test_compare_paired_hand_case():
    ks1, ks2, ns = [0, 1, 0, 2], [3, 4, 1, 6], [100, 100, 100, 100]
    c = compare_paired(ks1, ns, ks2, ns)
    assert c.difference == pytest.approx((14 - 3) / 400)  # MH equals pooled difference with equal n
    assert c.interval_method == "design_effect_newcombe"
    assert c.diff_low <= c.difference <= c.diff_high
    assert c.p_value == pytest.approx(exact_stratified_test(ks1, ns, ks2, ns))
    b = compare_paired(ks1, ns, ks2, ns, method="bootstrap")
    assert b.interval_method == "question_bootstrap" and b.diff_low <= b.difference <= b.diff_high
    # An arm without events: the bootstrap would collapse, so the pooled Newcombe interval is used.
    b0 = compare_paired([0, 0, 0, 0], ns, ks2, ns, method="bootstrap")
    assert b0.interval_method == "newcombe_pooled" and b0.diff_low > 0
    with pytest.raises(ValueError):
        compare_paired([1, 2], [10, 10], [1], [10])


def test_compare_paired_interval_by_hand():
    """Every step of the design-effect Newcombe interval written out for the hand case above."""
    ks1, ks2, n = [0, 1, 0, 2], [3, 4, 1, 6], 100
    num = [(k2 - k1) * n / (2 * n) for k1, k2 in zip(ks1, ks2, strict=True)]  # (k2 n1 - k1 n2) / (n1 + n2)
    weight = n * n / (2 * n)
    d = sum(num) / (4 * weight)
    var_questions = 4 / 3 * sum((x - d * weight) ** 2 for x in num) / (4 * weight) ** 2
    p1, p2, big_n = sum(ks1) / 400, sum(ks2) / 400, 400
    deff = max(1.0, var_questions / (p1 * (1 - p1) / big_n + p2 * (1 - p2) / big_n))
    t = 3.182446305284263  # Student t, 3 df, 97.5th percentile
    e = big_n / deff

    def wilson(p):
        centre = (p + t * t / (2 * e)) / (1 + t * t / e)
        half = t / (1 + t * t / e) * math.sqrt(p * (1 - p) / e + t * t / (4 * e * e))
        return centre - half, centre + half

    (l1, u1), (l2, u2) = wilson(p1), wilson(p2)
    low, high = d - math.hypot(p2 - l2, u1 - p1), d + math.hypot(u2 - p2, p1 - l1)
    c = compare_paired(ks1, [n] * 4, ks2, [n] * 4)
    assert deff == 1.0 and c.difference == pytest.approx(d, rel=1e-12)
    assert (c.diff_low, c.diff_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))


def test_compare_paired_weights_unequal_sizes():
    # Mantel-Haenszel weights n1 n2 / (n1 + n2), computed by hand.
    ks1, ns1, ks2, ns2 = [1, 4], [100, 400], [3, 2], [200, 100]
    w = [100 * 200 / 300, 400 * 100 / 500]
    d = [3 / 200 - 1 / 100, 2 / 100 - 4 / 400]
    c = compare_paired(ks1, ns1, ks2, ns2)
    assert c.difference == pytest.approx((w[0] * d[0] + w[1] * d[1]) / sum(w))


def test_compare_paired_coverage_and_size():
    """Shared question effects (beta rates, mean 1%, ICC 0.01; fine-tune doubles each): CI, size, power."""
    rng = np.random.default_rng(3)
    m, per_q, reps, mu = 40, 150, 300, 0.01
    s = 1 / 0.01 - 1
    base = rng.beta(mu * s, (1 - mu) * s, size=(reps, m))
    ns = [per_q] * m
    true_diff = mu  # population mean of 2 p_i - p_i
    covered = covered_boot = rejected_null = rejected_alt = 0
    for r in range(reps):
        k1 = rng.binomial(per_q, base[r])
        k2 = rng.binomial(per_q, np.minimum(1.0, 2 * base[r]))
        c = compare_paired(k1, ns, k2, ns)
        covered += c.diff_low <= true_diff <= c.diff_high
        b = compare_paired(k1, ns, k2, ns, method="bootstrap", seed=r, n_boot=1000)
        covered_boot += b.diff_low <= true_diff <= b.diff_high
        rejected_alt += c.p_value <= 0.05
        k2_null = rng.binomial(per_q, base[r])
        rejected_null += exact_stratified_test(k1, ns, k2_null, ns) <= 0.05
    covered, covered_boot = covered / reps, covered_boot / reps
    size, power = rejected_null / reps, rejected_alt / reps
    print(f"paired: coverage design-effect {covered:.3f}, bootstrap {covered_boot:.3f}; "
          f"exact stratified size {size:.3f}, power {power:.3f}")  # fmt: skip
    assert 0.91 <= covered <= 0.99  # too wide an interval fails as surely as too narrow a one
    assert 0.88 <= covered_boot <= 0.99
    assert size <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / reps)
    assert power >= 0.9
