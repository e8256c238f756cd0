"""Confidence intervals for a binomial proportion, plain and clustered by question."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict
from scipy import stats

IntervalMethod = Literal["wilson", "clopper_pearson"]
ClusterMethod = Literal["design_effect", "bootstrap"]


def _z(confidence: float) -> float:
    """Two-sided standard-normal critical value for `confidence`."""
    _check_confidence(confidence)
    return float(stats.norm.isf((1.0 - confidence) / 2.0))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def _wilson_arrays(k: ArrayLike, n: ArrayLike, z: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Vectorised Wilson score bounds; `k` and `n` may be non-integer (effective counts), n > 0."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    z2 = z * z
    centre = (k + z2 / 2.0) / (n + z2)
    half = z / (n + z2) * np.sqrt(np.maximum(k * (n - k) / n, 0.0) + z2 / 4.0)
    low = np.where(k <= 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    high = np.where(k >= n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return low, high


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (scipy's); (0, 1) when n == 0."""
    return _scipy_interval(k, n, confidence, "wilson")


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k/n (scipy's): low is 0 at k == 0, high is 1 at k == n."""
    return _scipy_interval(k, n, confidence, "exact")


def _scipy_interval(k: int, n: int, confidence: float, method: Literal["wilson", "exact"]) -> tuple[float, float]:
    _check_counts(k, n)
    _check_confidence(confidence)
    if n == 0:
        return 0.0, 1.0
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method=method)
    return float(ci.low), float(ci.high)


def _cluster_arrays(ks: Sequence[int], ns: Sequence[int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    k = np.asarray(ks, dtype=float)
    n = np.asarray(ns, dtype=float)
    if k.ndim != 1 or k.shape != n.shape:
        raise ValueError("ks and ns must be 1-D sequences of the same length")
    if np.any(n < 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= ks[i] <= ns[i] for every question")
    if k.size < 2:
        raise ValueError("a clustered interval needs at least two questions")
    if n.sum() <= 0:
        raise ValueError("no samples")
    return k, n


def design_effect(ks: Sequence[int], ns: Sequence[int]) -> float:
    """Ratio-estimator variance over the binomial variance of sum(ks)/sum(ns), floored at 1.

    Between-question variance uses the cluster-sampling (linearised ratio) estimator
    m/(m-1) * sum((k_i - p n_i)^2) / N^2; it equals 1 + (n_bar - 1) * ICC for equal cluster sizes.
    When no question (or every sample) is misaligned the clustering cannot be estimated and 1 is returned.
    """
    k, n = _cluster_arrays(ks, ns)
    total_n = n.sum()
    p = k.sum() / total_n
    if p <= 0.0 or p >= 1.0:
        return 1.0
    m = k.size
    var_ratio = m / (m - 1) * np.sum((k - p * n) ** 2) / total_n**2
    var_binom = p * (1.0 - p) / total_n
    return float(max(1.0, var_ratio / var_binom))


def cluster_interval(
    ks: Sequence[int],
    ns: Sequence[int],
    confidence: float = 0.95,
    method: ClusterMethod = "design_effect",
    seed: int = 0,
    n_boot: int = 2000,
) -> tuple[float, float]:
    """Interval for sum(ks)/sum(ns) when samples cluster within questions (ks/ns are per-question counts).

    "design_effect": Wilson on the effective sample size N/deff (see `design_effect`), with the Student-t
    critical value on m-1 degrees of freedom (m questions) because deff is itself estimated from m clusters.
    "bootstrap": percentile interval from resampling questions with replacement (`n_boot` draws, `seed`);
    it degenerates when no sample (or every sample) is misaligned, so then it falls back to plain Wilson.
    """
    k, n = _cluster_arrays(ks, ns)
    z = _z(confidence)
    total_k, total_n = k.sum(), n.sum()
    if method == "design_effect":
        n_eff = total_n / design_effect(ks, ns)
        t_crit = float(stats.t.isf((1.0 - confidence) / 2.0, k.size - 1))
        low, high = _wilson_arrays(total_k / total_n * n_eff, n_eff, t_crit)
        return float(low), float(high)
    if method == "bootstrap":
        if total_k <= 0 or total_k >= total_n:
            low, high = _wilson_arrays(total_k, total_n, z)
            return float(low), float(high)
        rng = np.random.default_rng(seed)
        m = k.size
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(float)
        denom = weights @ n
        boot = (weights @ k) / np.where(denom > 0, denom, 1.0)
        boot = boot[denom > 0]
        a = (1.0 - confidence) / 2.0
        low, high = np.quantile(boot, [a, 1.0 - a])
        return float(low), float(high)
    raise ValueError(f"unknown method {method!r}; use 'design_effect' or 'bootstrap'")


class Rate(BaseModel):
    """A misalignment rate k/n with its confidence interval and the method that produced it."""

    model_config = ConfigDict(frozen=True)

    k: int
    n: int
    rate: float
    low: float
    high: float
    method: str


def rate(k: int, n: int, method: IntervalMethod = "wilson", confidence: float = 0.95) -> Rate:
    """k/n (0.0 when n == 0) with a Wilson or Clopper-Pearson interval."""
    if method == "wilson":
        low, high = wilson(k, n, confidence)
    elif method == "clopper_pearson":
        low, high = clopper_pearson(k, n, confidence)
    else:
        raise ValueError(f"unknown method {method!r}; use 'wilson' or 'clopper_pearson'")
    return Rate(k=k, n=n, rate=k / n if n else 0.0, low=low, high=high, method=method)
