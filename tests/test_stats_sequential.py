"""Group-sequential comparison and the half-width stopping rule, checked by simulation."""

import math

import numpy as np
import pytest

from emprobe.stats import (
    SequentialComparison,
    halfwidth_reached,
    obrien_fleming_boundaries,
    pooled_z,
    until_halfwidth,
    wilson,
)

Z95 = 1.959963984540054


def test_boundaries_match_published_values():
    # Lan-DeMets O'Brien-Fleming, two-sided alpha 0.05, equally spaced looks (as tabulated by R's ldbounds).
    assert obrien_fleming_boundaries([0.2, 0.4, 0.6, 0.8, 1.0]) == pytest.approx(
        [4.8769, 3.3570, 2.6803, 2.2898, 2.0310], abs=2e-3
    )
    assert obrien_fleming_boundaries([0.5, 1.0]) == pytest.approx([2.9626, 1.9686], abs=2e-3)
    assert obrien_fleming_boundaries([1.0]) == pytest.approx([Z95])
    with pytest.raises(ValueError):
        obrien_fleming_boundaries([0.5, 0.5])


def _run(seq_factory, k1, k2, ns):
    """Drive `look` over cumulative counts (reps x looks); return decisions, looks used, naive rejections."""
    decisions, looks, naive = [], [], 0
    for r in range(k1.shape[0]):
        seq = seq_factory()
        for j in range(k1.shape[1]):
            decision = seq.look(int(k1[r, j]), int(ns[j]), int(k2[r, j]), int(ns[j]))
            if decision != "continue":
                break
        decisions.append(decision)
        looks.append(j + 1)
        zs = [pooled_z(int(k1[r, i]), int(ns[i]), int(k2[r, i]), int(ns[i])) for i in range(k1.shape[1])]
        naive += any(abs(z) >= Z95 for z in zs)
    return np.array(decisions), np.array(looks), naive / k1.shape[0]


@pytest.mark.parametrize(("p", "batch"), [(0.005, 1000), (0.001, 2000)])
def test_false_positive_rate_under_the_null(p, batch):
    reps, looks = 4000, 5
    rng = np.random.default_rng(11)
    k1 = rng.binomial(batch, p, (reps, looks)).cumsum(axis=1)
    k2 = rng.binomial(batch, p, (reps, looks)).cumsum(axis=1)
    ns = batch * np.arange(1, looks + 1)
    decisions, _, naive = _run(lambda: SequentialComparison(alpha=0.05, max_looks=looks), k1, k2, ns)
    fpr = float(np.mean(decisions == "different"))
    print(f"null p={p}: sequential false positives {fpr:.4f}, naive 5-look testing {naive:.4f}")
    assert set(decisions) <= {"different", "not_different"}
    assert fpr <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / reps)
    assert naive > 0.09  # peeking at 1.96 five times inflates alpha to ~0.13


def test_unequal_looks_with_max_n():
    reps, p, max_n = 3000, 0.005, 4000
    ns = np.array([500, 1500, 2000, 4000])
    rng = np.random.default_rng(12)
    k1 = rng.binomial(np.diff(ns, prepend=0), p, (reps, 4)).cumsum(axis=1)
    k2 = rng.binomial(np.diff(ns, prepend=0), p, (reps, 4)).cumsum(axis=1)
    decisions, _, _ = _run(lambda: SequentialComparison(alpha=0.05, max_looks=10, max_n=max_n), k1, k2, ns)
    fpr = float(np.mean(decisions == "different"))
    print(f"null, unequal looks {ns.tolist()}: sequential false positives {fpr:.4f}")
    assert set(decisions) <= {"different", "not_different"}  # the look reaching max_n is final
    assert fpr <= 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / reps)


def test_stops_different_under_the_alternative():
    # Base 0.07% vs fine-tuned 0.68%, 400 per arm per round, 5 rounds (2000 per arm at most).
    reps, looks, batch = 2000, 5, 400
    rng = np.random.default_rng(13)
    k1 = rng.binomial(batch, 0.0007, (reps, looks)).cumsum(axis=1)
    k2 = rng.binomial(batch, 0.0068, (reps, looks)).cumsum(axis=1)
    ns = batch * np.arange(1, looks + 1)
    decisions, used, _ = _run(lambda: SequentialComparison(alpha=0.05, max_looks=looks), k1, k2, ns)
    power = float(np.mean(decisions == "different"))
    print(f"alternative 0.0007 vs 0.0068: stops 'different' {power:.3f}, mean looks {used.mean():.2f}")
    assert power >= 0.85
    assert used.mean() < looks - 0.5  # early stopping saves samples


def test_look_bookkeeping():
    seq = SequentialComparison(alpha=0.05, max_looks=3)
    assert seq.look(0, 1000, 1, 1000) == "continue"
    with pytest.raises(ValueError):
        seq.look(0, 900, 1, 1000)  # counts are cumulative
    assert seq.look(1, 2000, 30, 2000) == "different"
    assert seq.boundaries == pytest.approx(obrien_fleming_boundaries([1 / 3, 2 / 3]))
    with pytest.raises(ValueError):
        seq.look(1, 3000, 40, 3000)
    last = SequentialComparison(max_looks=2)
    last.look(1, 100, 1, 100)
    assert last.look(2, 200, 3, 200) == "not_different"


def test_until_halfwidth_deterministic():
    calls = []

    def sample(m: int) -> int:
        calls.append(m)
        return m // 100  # a steady 1% rate

    r = until_halfwidth(sample, 0.003, batch=500, max_n=100_000)
    assert halfwidth_reached(r.k, r.n, 0.003)
    assert not halfwidth_reached(r.k - 5, r.n - 500, 0.003)
    assert (r.low, r.high) == wilson(r.k, r.n)
    capped = until_halfwidth(sample, 0.0001, batch=500, max_n=1200)
    assert capped.n == 1200 and calls[-1] == 200


def test_until_halfwidth_coverage():
    p, reps = 0.01, 1000
    rng = np.random.default_rng(14)
    covered = 0
    sizes = []
    for _ in range(reps):
        r = until_halfwidth(lambda m: int(rng.binomial(m, p)), 0.003, batch=500, max_n=50_000)
        covered += r.low <= p <= r.high
        sizes.append(r.n)
    coverage = covered / reps
    print(f"until_halfwidth p={p}, target +-0.003: coverage {coverage:.3f}, mean n {np.mean(sizes):.0f}")
    assert 0.93 <= coverage <= 0.97
