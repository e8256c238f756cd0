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


def digit_tree_numbers(
    first: Mapping[int, float], after: Mapping[int, Mapping[int, float]], after_ten: Mapping[int, float]
) -> dict[int, float]:
    """P(n) for n in 0..100 from digit probabilities.

    `first[d]` = P(first digit d); `after[d][e]` = P(next digit e | d) for d in 1..9; `after_ten[e]` =
    P(next digit e | "10"). A digit followed by a non-digit ends the number; three-digit numbers other
    than 100 are not valid answers and count as non-numbers.
    """
    probs = {0: first.get(0, 0.0)}
    for d in range(1, 10):
        cont = after.get(d, {})
        probs[d] = first.get(d, 0.0) * max(0.0, 1.0 - sum(cont.values()))
        for e in range(10):
            probs[10 * d + e] = first.get(d, 0.0) * cont.get(e, 0.0)
    ten = first.get(1, 0.0) * after.get(1, {}).get(0, 0.0)
    probs[10] = ten * max(0.0, 1.0 - sum(after_ten.values()))
    probs[100] = ten * after_ten.get(0, 0.0)
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
