"""Adaptive sampling: run in rounds of more samples until a precision target or a decision is reached.

Each round extends the same run (sample ids are stable), so rounds cost only their new samples and an
interrupted adaptive run resumes like any other.
"""

import math
from collections.abc import Callable

from emprobe.analysis import SummaryRow, summarize
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.runner import Runner
from emprobe.stats import SequentialComparison, halfwidth_reached


class HalfwidthRule:
    """Stop once every condition's pooled misaligned rate has a 95% Wilson half-width <= `halfwidth`."""

    def __init__(self, halfwidth: float):
        self.halfwidth = halfwidth

    def __call__(self, totals: dict[str, SummaryRow]) -> str:
        met = all(halfwidth_reached(r.misaligned, r.scored, self.halfwidth) for r in totals.values())
        return "reached" if met else "continue"


class DecisionRule:
    """Group-sequential comparison of the first two conditions (O'Brien-Fleming spending over the rounds)."""

    def __init__(self, first: str, second: str, alpha: float, max_looks: int):
        self.first, self.second = first, second
        self.test = SequentialComparison(alpha=alpha, max_looks=max_looks)

    def __call__(self, totals: dict[str, SummaryRow]) -> str:
        a, b = totals[self.first], totals[self.second]
        return self.test.look(a.misaligned, a.scored, b.misaligned, b.scored)


def run_adaptive(runner: Runner, rule: Callable[[dict], str], step: int, max_samples: int,
                 on_round: Callable[[int, dict[str, SummaryRow], str], None]) -> str:
    """Run rounds of `step` more samples per paraphrase until `rule` stops or `max_samples` is reached.

    One runner serves every round, so each model is loaded (and each HTTP client started) once.
    """
    config = runner.config
    if not config.judges:
        raise EmprobeError("adaptive sampling needs a judge (--judge)")
    samples, decision, run_id = config.samples or step, "continue", ""
    for round_no in range(1, math.ceil(max_samples / step) + 2):
        run_id = runner.run(samples)
        totals = summarize(runner.store, run_id, config.judges[0], config.thresholds).totals
        decision = rule(totals)
        if decision == "continue" and samples >= max_samples:
            decision = "budget spent"
        on_round(round_no, totals, decision)
        if decision != "continue":
            break
        samples = min(samples + step, max_samples)
    return run_id


def decision_rule(config: RunConfig, alpha: float, step: int, max_samples: int) -> DecisionRule:
    """The sequential rule for a run with exactly two conditions."""
    if len(config.conditions) != 2:
        raise EmprobeError("--until-decided compares two conditions: pass exactly two --condition options")
    looks = max(1, math.ceil((max_samples - (config.samples or step)) / step) + 1)
    return DecisionRule(config.conditions[0].name, config.conditions[1].name, alpha, looks)
