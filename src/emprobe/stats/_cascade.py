"""The misaligned rate of a cascade: a screen judges every answer, a confirming judge judges a stratified sample.

Two-phase (double) sampling: every answer falls in a stratum by the screen (screened in, screened out); a stratum
is confirmed whole or by a random sample. The rate is the inverse-probability-weighted mean of the confirming
judge's calls, per answer the confirming judge scores (its named replies and failures are left out, as in a plain
run's rate). The interval combines per-stratum intervals by MOVER (Zou & Donner 2008): a fully confirmed stratum
counts its misaligned answers out of all scored answers (Wilson; its only uncertainty is the model's own sampling),
a sampled one is its scored weight times a Wilson interval of its sample, whose lower bound at one misaligned
answer is the Jeffreys one (Wilson's is too high there, Brown, Cai & DasGupta 2001, so a single audited positive
lifts the interval above the true rate). tests/test_cascade_stats.py checks its coverage by simulation.
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict
from scipy import stats

from ._intervals import _wilson_arrays, _z

Arrays = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]


class Stratum(BaseModel):
    """One screening stratum: its answers, how many the confirming judge judged, scored and called misaligned."""

    model_config = ConfigDict(frozen=True)

    answers: int
    confirmed: int
    """Judged by the confirming judge (scored, named or failed)."""
    scored: int
    """Confirmed answers with both scores: the rate's denominator."""
    misaligned: int


class CascadeRate(BaseModel):
    """The cascade's misaligned rate, its interval and standard error, and what the confirming judge was spent on."""

    model_config = ConfigDict(frozen=True)

    rate: float
    low: float
    high: float
    se: float
    answers: int
    """Every screened answer: what confirming every answer would cost."""
    confirmed: int
    """Confirming calls spent (answers the confirming judge judged)."""


def _sampled_interval(k: NDArray[np.float64], n: NDArray[np.float64], z: float
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Wilson, with the Jeffreys lower bound at k == 1; (0, 1) for an empty sample."""
    low, high = _wilson_arrays(k, np.maximum(n, 1e-12), z)
    jeffreys = stats.beta.ppf(stats.norm.sf(z), k + 0.5, np.maximum(n - k + 0.5, 0.5))
    low = np.where(k == 1, jeffreys, low)
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 1.0)


def cascade_arrays(answers: ArrayLike, confirmed: ArrayLike, scored: ArrayLike, misaligned: ArrayLike,
                   confidence: float = 0.95) -> Arrays:
    """(rate, low, high, se), vectorised: the last axis of each input holds the strata, the others broadcast."""
    n, m, s, k = (np.asarray(x, dtype=float) for x in (answers, confirmed, scored, misaligned))
    z = _z(confidence)
    full = m >= n
    weight_n = np.where(m > 0, n * s / np.maximum(m, 1.0), n)  # scored answers each stratum holds (estimated)
    total = weight_n.sum(axis=-1)
    safe_total = np.maximum(total, 1e-12)
    w = weight_n / safe_total[..., None]
    q = np.where(s > 0, k / np.maximum(s, 1.0), 0.0)
    sampled_low, sampled_high = _sampled_interval(k, s, z)
    a_sampled = np.where(full, 0.0, w * q)
    k_full = np.where(full, k, 0.0).sum(axis=-1)
    a_full = k_full / safe_total
    full_low, full_high = _wilson_arrays(k_full, safe_total, z)
    rate = a_full + a_sampled.sum(axis=-1)
    below = (a_full - full_low) ** 2 + (np.where(full, 0.0, w * (q - sampled_low)) ** 2).sum(axis=-1)
    above = (full_high - a_full) ** 2 + (np.where(full, 0.0, w * (sampled_high - q)) ** 2).sum(axis=-1)
    var = a_full * (1 - a_full) / safe_total + np.where(full, 0.0, w**2 * q * (1 - q) / np.maximum(s, 1.0)).sum(-1)
    low = np.clip(rate - np.sqrt(below), 0.0, 1.0)
    high = np.clip(rate + np.sqrt(above), 0.0, 1.0)
    empty = total <= 0
    return (np.where(empty, 0.0, rate), np.where(empty, 0.0, low), np.where(empty, 1.0, high),
            np.where(empty, 0.0, np.sqrt(var)))


def cascade_rate(strata: Sequence[Stratum], confidence: float = 0.95) -> CascadeRate:
    """The rate of one cascade from its strata's counts (see `cascade_arrays`)."""
    for h in strata:
        if not 0 <= h.misaligned <= h.scored <= h.confirmed <= h.answers:
            raise ValueError(f"need 0 <= misaligned <= scored <= confirmed <= answers, got {h}")
    counts = [[h.answers, h.confirmed, h.scored, h.misaligned] for h in strata] or [[0, 0, 0, 0]]
    n, m, s, k = np.asarray(counts, dtype=float).T
    rate, low, high, se = cascade_arrays(n, m, s, k, confidence)
    return CascadeRate(rate=float(rate), low=float(low), high=float(high), se=float(se),
                       answers=sum(h.answers for h in strata), confirmed=sum(h.confirmed for h in strata))
