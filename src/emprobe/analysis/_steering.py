"""Steering and ablation results: each intervention's misaligned rate against the unchanged condition, next to
its controls' (norm-matched random vectors, the direction at another layer)."""

from collections.abc import Mapping

from pydantic import BaseModel

from emprobe.analysis._compare import Counts, Delta, compare_counts
from emprobe.analysis._summary import SummaryRow
from emprobe.condition import Condition

STEERING_NOTE = ("Each intervention's misaligned rate minus the baseline's, paired by question, beside its controls: "
                 "random vectors of exactly the direction's norm (~randomN) and the direction at another layer "
                 "(~layerN). An effect is the direction's only where the controls' are clearly smaller.")


class InterventionRate(BaseModel):
    """One intervention condition (or one of its controls): its rate and its difference from the baseline."""

    condition: str
    what: str
    """The intervention in words (`steer alpha=4 at layer 16, control random:0`)."""
    row: SummaryRow
    delta: Delta | None
    """Against the baseline condition, paired by question; None without a baseline."""


class SteeringRow(BaseModel):
    """An intervention and its controls."""

    intervention: InterventionRate
    controls: list[InterventionRate]
    baseline: str | None
    """The first condition that asks the same way (format, prompts, decoding) without changing the model; None
    when the run has none."""


def steering_rows(conditions: list[dict], totals: dict[str, SummaryRow],
                  by_question: Mapping[str, Counts]) -> list[SteeringRow]:
    """Per intervention condition of a run (from its stored config), its rate and its controls' (empty when the run
    has none); `totals` and `by_question` are the run's per-condition rows and per-question counts."""
    parsed = [Condition.model_validate(c) for c in conditions]
    plain = [c for c in parsed if c.intervention is None and c.name in totals]

    def asked(c: Condition) -> dict:
        return c.model_dump(exclude={"name", "intervention"})

    def rate(c: Condition, baseline: str | None) -> InterventionRate:
        assert c.intervention is not None
        delta = (compare_counts(c.name, baseline, c.name, by_question[baseline], by_question.get(c.name, {}))
                 if baseline else None)
        return InterventionRate(condition=c.name, what=c.intervention.describe(), row=totals[c.name], delta=delta)

    changed = [c for c in parsed if c.intervention is not None and c.name in totals]
    out = []
    for c in changed:
        if c.intervention is None or c.intervention.control is not None:
            continue
        baseline = next((b.name for b in plain if asked(b) == asked(c)), None)
        out.append(SteeringRow(intervention=rate(c, baseline), baseline=baseline, controls=[
            rate(k, baseline) for k in changed if k.intervention and k.intervention.of == c.name]))
    return out


def baseline_note(rows: list[SteeringRow]) -> str:
    """Which unchanged condition each intervention is compared with."""
    named = sorted({r.baseline for r in rows if r.baseline})
    missing = [r.intervention.condition for r in rows if r.baseline is None]
    parts = [f"baseline: {', '.join(named)}"] if named else []
    if missing:
        parts.append(f"no unchanged condition asks like {', '.join(missing)} (same format, prompts and decoding), "
                     "so no difference is shown for it")
    return "; ".join(parts)
