"""Rogan-Gladen correction of a rate for a judge's sensitivity and specificity."""

import numpy as np
import pytest

from emprobe.stats import rogan_gladen, rogan_gladen_point, wilson


def test_point_estimate_by_hand():
    assert rogan_gladen_point(0.10, 0.90, 0.95) == pytest.approx(0.05 / 0.85)
    assert rogan_gladen_point(0.01, 0.90, 0.95) == 0.0  # fewer flags than false positives alone: clipped
    assert rogan_gladen_point(0.2, 1.0, 1.0) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        rogan_gladen_point(0.1, 0.5, 0.5)


def test_interval_widens_with_the_judges_uncertainty():
    perfect = rogan_gladen(150, 1000, tp=10_000, fn=0, tn=10_000, fp=0)
    lo, hi = wilson(150, 1000)
    assert perfect.corrected == pytest.approx(0.15)
    assert perfect.low == pytest.approx(lo, abs=0.004) and perfect.high == pytest.approx(hi, abs=0.004)
    small = rogan_gladen(150, 1000, tp=45, fn=5, tn=190, fp=10)
    large = rogan_gladen(150, 1000, tp=900, fn=100, tn=3800, fp=200)
    assert small.corrected == pytest.approx(large.corrected) == pytest.approx(0.1 / 0.85)
    assert (small.high - small.low) > (large.high - large.low) > (perfect.high - perfect.low)


def test_corrected_interval_covers_the_true_rate():
    rng = np.random.default_rng(1)
    true, sens, spec, n, hits = 0.05, 0.85, 0.97, 2000, 0
    trials = 200
    for t in range(trials):
        positives = rng.binomial(n, true)
        flagged = rng.binomial(positives, sens) + rng.binomial(n - positives, 1 - spec)
        tp = rng.binomial(300, sens)
        tn = rng.binomial(700, spec)
        r = rogan_gladen(flagged, n, tp=tp, fn=300 - tp, tn=tn, fp=700 - tn, draws=4000, seed=t)
        hits += r.low <= true <= r.high
    assert 0.90 <= hits / trials <= 0.995
