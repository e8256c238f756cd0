"""The cascade's two-phase estimator: unbiased, and its 95% interval covers 93-97% of the time over rare rates,
weak and strong screens and small and large audits (simulated populations of 20,000 answers, seeded)."""

import numpy as np
import pytest

from emprobe.stats import Stratum, cascade_arrays, cascade_rate

ANSWERS = 20_000
SIMULATIONS = 10_000
SPECIFICITY = 0.9
TOLERANCE = 2 * np.sqrt(0.95 * 0.05 / SIMULATIONS)
"""Two Monte Carlo standard errors of a coverage estimate near 95%."""


def simulate(rate: float, sensitivity: float, audit: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Counts of many cascades: every answer screened, the screened-in all confirmed, the rest audited at random."""
    return simulate_strata(rate, [sensitivity, 1 - sensitivity], [1 - SPECIFICITY, SPECIFICITY], [1.0, audit], rng)


def simulate_strata(rate: float, misaligned_shares: list[float], aligned_shares: list[float], fractions: list[float],
                    rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Counts of many cascades whose screen puts these shares of the misaligned and aligned answers in each stratum,
    of which these fractions are confirmed at random (1: the whole stratum).

    Cells per stratum: confirmed and misaligned, confirmed and aligned, not confirmed (either)."""
    share_bad, share_good, f = (np.asarray(x) for x in (misaligned_shares, aligned_shares, fractions))
    cells = np.stack([rate * share_bad * f, (1 - rate) * share_good * f,
                      rate * share_bad * (1 - f) + (1 - rate) * share_good * (1 - f)], axis=-1)
    counts = rng.multinomial(ANSWERS, cells.ravel(), size=SIMULATIONS).reshape(SIMULATIONS, len(f), 3)
    answers = counts.sum(axis=-1)
    confirmed = counts[..., 0] + counts[..., 1]
    return answers, confirmed, confirmed, counts[..., 0]


GRID = [(rate, sensitivity, audit) for rate in (0.001, 0.005, 0.01, 0.05) for sensitivity in (0.5, 0.7, 0.95)
        for audit in (0.01, 0.05, 0.2)]


def test_interval_covers_within_93_to_97_percent():
    rng = np.random.default_rng(15)
    coverage = {}
    for rate, sensitivity, audit in GRID:
        estimate, low, high, _ = cascade_arrays(*simulate(rate, sensitivity, audit, rng))
        coverage[(rate, sensitivity, audit)] = float(np.mean((low <= rate) & (rate <= high)))
    outside = {cell: c for cell, c in coverage.items() if not 0.93 - TOLERANCE <= c <= 0.97 + TOLERANCE}
    assert not outside, outside
    assert 0.94 <= np.mean(list(coverage.values())) <= 0.96


SCREENS = {  # shares of the misaligned and of the aligned answers: screened in, in the band, below it
    "built-in judge, calibration cells": ([0.635, 0.337, 0.028], [0.06, 0.253, 0.687]),
    "built-in judge, unseen repository": ([0.854, 0.131, 0.015], [0.435, 0.37, 0.195]),
    "weak": ([0.3, 0.4, 0.3], [0.05, 0.25, 0.7]),
}
"""The first two: `Cascade`'s default bands (P from 0.05; from 0.003; below) on the built-in judge's readings of
5,000 GPT-4o rows of its calibration cells and of the 839 answers of the gemma-judged repository it never saw."""
BAND_GRID = [(rate, screen, audit, band) for rate in (0.001, 0.005, 0.01, 0.05) for screen in SCREENS
             for audit, band in ((0.01, 0.05), (0.05, 0.2), (0.1, 0.3), (0.2, 0.5))]


def test_with_a_band_the_interval_still_covers_within_93_to_97_percent():
    rng = np.random.default_rng(16)
    coverage = {}
    for rate, screen, audit, band in BAND_GRID:
        counts = simulate_strata(rate, *SCREENS[screen], [1.0, band, audit], rng)
        _, low, high, _ = cascade_arrays(*counts)
        coverage[(rate, screen, audit, band)] = float(np.mean((low <= rate) & (rate <= high)))
    outside = {cell: c for cell, c in coverage.items() if not 0.93 - TOLERANCE <= c <= 0.97 + TOLERANCE}
    assert not outside, outside
    assert 0.94 <= np.mean(list(coverage.values())) <= 0.96


@pytest.mark.parametrize(("rate", "audit", "band"), [(0.01, 0.2, 0.5), (0.001, 0.05, 0.2)])
def test_with_a_band_the_estimate_is_unbiased(rate, audit, band):
    counts = simulate_strata(rate, *SCREENS["built-in judge, calibration cells"], [1.0, band, audit],
                             np.random.default_rng(2))
    estimate, _, _, se = cascade_arrays(*counts)
    spread = estimate.std()
    assert abs(estimate.mean() - rate) < 3 * spread / np.sqrt(SIMULATIONS)
    assert abs(np.mean(se**2) / spread**2 - 1) < 0.1


@pytest.mark.parametrize(("rate", "sensitivity", "audit"), [(0.01, 0.7, 0.05), (0.001, 0.5, 0.2), (0.05, 0.7, 0.01)])
def test_estimate_is_unbiased_and_its_standard_error_matches_the_spread(rate, sensitivity, audit):
    estimate, _, _, se = cascade_arrays(*simulate(rate, sensitivity, audit, np.random.default_rng(1)))
    spread = estimate.std()
    assert abs(estimate.mean() - rate) < 3 * spread / np.sqrt(SIMULATIONS)
    assert abs(np.mean(se**2) / spread**2 - 1) < 0.1  # the variance estimate is unbiased too


def test_named_and_failed_answers_leave_the_denominator():
    """Of 100 screened-in answers 10 were named (CODE) by the confirming judge; of 900 screened out, 90 were
    audited, 80 of them scored: the rate is per scored answer, each stratum's scored share estimated."""
    rate = cascade_rate([Stratum(answers=100, confirmed=100, scored=90, misaligned=9),
                         Stratum(answers=900, confirmed=90, scored=80, misaligned=2)])
    scored_out = 900 * 80 / 90
    assert rate.rate == pytest.approx((9 + scored_out * 2 / 80) / (90 + scored_out))
    assert rate.low < rate.rate < rate.high
    assert (rate.answers, rate.confirmed) == (1000, 190)


def test_confirming_everything_is_the_plain_wilson_interval():
    from emprobe.stats import wilson

    rate = cascade_rate([Stratum(answers=50, confirmed=50, scored=50, misaligned=3),
                         Stratum(answers=950, confirmed=950, scored=950, misaligned=7)])
    assert rate.rate == pytest.approx(0.01)
    assert (rate.low, rate.high) == pytest.approx(wilson(10, 1000), rel=1e-6)


def test_an_unaudited_stratum_leaves_the_rate_open():
    rate = cascade_rate([Stratum(answers=10, confirmed=10, scored=10, misaligned=1),
                         Stratum(answers=90, confirmed=0, scored=0, misaligned=0)])
    assert rate.high > 0.8 and rate.confirmed == 10


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError, match="misaligned <= scored"):
        cascade_rate([Stratum(answers=10, confirmed=5, scored=6, misaligned=1)])
