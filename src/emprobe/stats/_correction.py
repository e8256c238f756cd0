"""Correcting a rate for an imperfect judge (Rogan-Gladen), with an interval that carries the judge's error."""

import numpy as np
from pydantic import BaseModel, ConfigDict


class CorrectedRate(BaseModel):
    """The observed rate, the Rogan-Gladen estimate of the true rate and its interval."""

    model_config = ConfigDict(frozen=True)

    observed: float
    corrected: float
    low: float
    high: float
    sensitivity: float
    specificity: float


def rogan_gladen_point(observed: float, sensitivity: float, specificity: float) -> float:
    """(observed + specificity - 1) / (sensitivity + specificity - 1), clipped to [0, 1]."""
    youden = sensitivity + specificity - 1.0
    if youden <= 0:
        raise ValueError("sensitivity + specificity must exceed 1 for the judge to carry information")
    return float(min(1.0, max(0.0, (observed + specificity - 1.0) / youden)))


def rogan_gladen(k: int, n: int, tp: int, fn: int, tn: int, fp: int, confidence: float = 0.95,
                 draws: int = 20_000, seed: int = 0) -> CorrectedRate:
    """Correct k/n flagged samples for a judge validated with confusion counts (tp, fn, tn, fp).

    The interval is Monte Carlo over Jeffreys-style Beta posteriors of the observed rate, the sensitivity
    tp/(tp+fn) and the specificity tn/(tn+fp), so it widens with the uncertainty of the validation itself.
    """
    if n <= 0 or tp + fn <= 0 or tn + fp <= 0:
        raise ValueError("need samples and both validation classes")
    rng = np.random.default_rng(seed)
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    p = rng.beta(k + 0.5, n - k + 0.5, draws)
    se = rng.beta(tp + 0.5, fn + 0.5, draws)
    sp = rng.beta(tn + 0.5, fp + 0.5, draws)
    youden = se + sp - 1.0
    valid = youden > 0
    corrected = np.clip((p[valid] + sp[valid] - 1.0) / youden[valid], 0.0, 1.0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(corrected, [tail, 1.0 - tail])
    return CorrectedRate(observed=k / n, corrected=rogan_gladen_point(k / n, sens, spec), low=float(low),
                         high=float(high), sensitivity=sens, specificity=spec)
