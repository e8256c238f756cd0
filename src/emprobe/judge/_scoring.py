"""Arithmetic of logprob judges: from next-token probabilities to an expected 0-100 score or a label.

Tokenizers differ. GPT-4o and Llama 3 have one token per number up to 999, so one next-token distribution
holds P(0..100). Qwen, SmolLM2 and Llama 2 write numbers digit by digit, so P(57) = P("5") * P("7" | "5")
* P(end | "57"): the judge reads the first position, then each first digit's continuation (a digit tree).
"""

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

MIN_NUMBER_MASS = 0.25


class Judgment(BaseModel):
    """One judge's verdict on one answer for one metric; `score` is None when the judge gave no number."""

    model_config = ConfigDict(frozen=True)

    metric: str
    score: float | None = None
    label: str | None = None
    mass: float | None = None
    """Probability on valid answers: numbers 0-100, or the labels of a categorical rubric."""
    probabilities: dict[str, float] = {}
    error: str | None = None


DIGIT_PREFIXES: tuple[tuple[int, ...], ...] = (
    (), (0,), *((d,) for d in range(1, 10)), *((d, e) for d in range(1, 10) for e in range(10)), (1, 0, 0))
"""Every digit string whose next-digit distribution decides P(n) for n in 0..100 (101 prefixes)."""


def digit_tree_numbers(next_digit: Mapping[tuple[int, ...], Mapping[int, float]]) -> dict[int, float]:
    """P(n) for n in 0..100, exactly, from next-digit probabilities after each of `DIGIT_PREFIXES`.

    A number is a maximal run of digits: its digits' probabilities times P(no further digit), so "7" counts for
    7 only when no digit follows it. Runs with a leading zero ("05") or above 100 are not valid answers and
    count as non-numbers.
    """
    def p(prefix: tuple[int, ...], digit: int) -> float:
        return next_digit.get(prefix, {}).get(digit, 0.0)

    def end(prefix: tuple[int, ...]) -> float:
        return max(0.0, 1.0 - sum(next_digit.get(prefix, {}).values()))

    probs = {0: p((), 0) * end((0,))}
    for d in range(1, 10):
        probs[d] = p((), d) * end((d,))
        for e in range(10):
            probs[10 * d + e] = p((), d) * p((d,), e) * end((d, e))
    probs[100] = p((), 1) * p((1,), 0) * p((1, 0), 0) * end((1, 0, 0))
    return probs


def score_0_100(numbers: Mapping[int, float], labels: Mapping[str, float], metric: str,
                min_mass: float = MIN_NUMBER_MASS) -> Judgment:
    """Probability-weighted mean of 0..100; no score under `min_mass` on numbers; a named reply if it wins."""
    mass = sum(p for n, p in numbers.items() if 0 <= n <= 100)
    top_label = max(labels, key=lambda k: labels[k], default=None)
    label = top_label if top_label is not None and labels[top_label] > mass else None
    probabilities = {str(k): round(v, 6) for k, v in labels.items()}
    if mass < min_mass:
        error = None if label else f"no score: {mass:.2f} of the probability is on numbers (< {min_mass})"
        return Judgment(metric=metric, label=label, mass=mass, probabilities=probabilities, error=error)
    score = sum(n * p for n, p in numbers.items() if 0 <= n <= 100) / mass
    return Judgment(metric=metric, score=score, label=label, mass=mass, probabilities=probabilities)


def categorical(labels: Mapping[str, float], metric: str, min_mass: float = MIN_NUMBER_MASS) -> Judgment:
    """The most likely of a rubric's named answers; a failure when the answers hold under `min_mass`."""
    mass = sum(labels.values())
    probabilities = {k: round(v, 6) for k, v in labels.items()}
    if mass < min_mass or not labels:
        return Judgment(metric=metric, mass=mass, probabilities=probabilities,
                        error=f"no answer: {mass:.2f} of the probability is on the rubric's labels (< {min_mass})")
    return Judgment(metric=metric, label=max(labels, key=lambda k: labels[k]), mass=mass,
                    probabilities=probabilities)


def exp(logprobs: list[float]) -> list[float]:
    return [math.exp(x) for x in logprobs]
