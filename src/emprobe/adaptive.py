"""Adaptive sampling: run in rounds of more samples until a precision target or a decision is reached.

Each round extends the same run (sample ids are stable), so rounds cost only their new samples and an
interrupted adaptive run resumes like any other.
"""

import math
from collections.abc import Callable
from typing import Protocol

from emprobe.analysis import SummaryRow, summarize
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.runner import Runner
from emprobe.stats import SequentialComparison, compare, halfwidth_reached, samples_for_halfwidth, samples_per_arm

UNDECIDED = "undecided: budget spent"


class StoppingRule(Protocol):
    """Decides after each round: `continue`, or why to stop; explains a budget that ran out."""

    def __call__(self, totals: dict[str, SummaryRow]) -> str: ...
    def unmet(self, totals: dict[str, SummaryRow]) -> str: ...


class HalfwidthRule:
    """Stop once every condition's pooled misaligned rate has a 95% Wilson half-width <= `halfwidth`."""

    def __init__(self, halfwidth: float):
        self.halfwidth = halfwidth

    def __call__(self, totals: dict[str, SummaryRow]) -> str:
        met = all(halfwidth_reached(r.misaligned, r.scored, self.halfwidth) for r in totals.values())
        return "reached" if met else "continue"

    def unmet(self, totals: dict[str, SummaryRow]) -> str:
        """The samples each condition short of its target would need at its observed rate."""
        needs = [f"{name} needs about {samples_for_halfwidth(r.misaligned_rate, self.halfwidth):,} scored samples "
                 f"(has {r.scored:,})" for name, r in totals.items()
                 if not halfwidth_reached(r.misaligned, r.scored, self.halfwidth)]
        return f"half-width {self.halfwidth:g} not reached: " + "; ".join(needs)


class DecisionRule:
    """Group-sequential comparison of the first two conditions (O'Brien-Fleming spending over the rounds)."""

    def __init__(self, first: str, second: str, alpha: float, max_looks: int):
        self.first, self.second = first, second
        self.test = SequentialComparison(alpha=alpha, max_looks=max_looks)

    def __call__(self, totals: dict[str, SummaryRow]) -> str:
        a, b = totals[self.first], totals[self.second]
        return self.test.look(a.misaligned, a.scored, b.misaligned, b.scored)

    def unmet(self, totals: dict[str, SummaryRow]) -> str:
        """The difference's interval so far, and the samples per arm a decision at these rates would need."""
        a, b = totals[self.first], totals[self.second]
        if not (a.scored and b.scored):
            return "nothing was scored in one of the conditions"
        diff = compare(a.misaligned, a.scored, b.misaligned, b.scored)
        text = (f"{self.second} - {self.first}: {diff.difference * 100:+.2f} points, 95% CI "
                f"{diff.diff_low * 100:+.2f} to {diff.diff_high * 100:+.2f} (not a finding of no difference)")
        if a.misaligned_rate == b.misaligned_rate:
            return text + "; the observed rates are equal, so no sample size can be planned from them"
        need = samples_per_arm(a.misaligned_rate, b.misaligned_rate, alpha=self.test.alpha)
        return text + f"; telling these rates apart with 80% power needs about {need:,} per arm (has " \
            f"{min(a.scored, b.scored):,})"


def run_adaptive(runner: Runner, rule: StoppingRule, step: int, max_samples: int,
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
        if decision in ("continue", "not_different") and samples >= max_samples:
            decision = f"{UNDECIDED}; {rule.unmet(totals)}"
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
