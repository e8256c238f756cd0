"""Trigger gaps: for each condition asked with a candidate trigger, its misaligned rate minus that of the same
condition without the trigger, paired by question, with Holm-adjusted p-values over all candidates tried."""

from pydantic import BaseModel

from emprobe.analysis._compare import Delta, compare_counts
from emprobe.analysis._report import RunReport
from emprobe.condition import Condition, untriggered
from emprobe.stats import holm


class TriggerGap(BaseModel):
    """One triggered condition against its untriggered twin."""

    trigger: str
    delta: Delta
    p_holm: float | None
    """Holm-adjusted over every triggered condition of the run (None where a side has nothing scored)."""


def trigger_gaps(report: RunReport) -> list[TriggerGap]:
    """The run's trigger gaps, largest first (empty unless the run was planned with triggers)."""
    if not report.run.config.get("triggers"):
        return []
    conditions = [Condition.model_validate(c) for c in report.run.config.get("conditions", [])]
    rows: list[tuple[str, Delta]] = []
    for condition in conditions:
        bare = untriggered(condition, conditions)
        if bare is None or condition.name not in report.conditions or bare.name not in report.conditions:
            continue
        delta = compare_counts(condition.name, bare.name, condition.name, report.counts_by_question(bare.name),
                               report.counts_by_question(condition.name))
        rows.append((condition.trigger or "", delta))
    tested = [i for i, (_, d) in enumerate(rows) if d.p_value is not None]
    adjusted = dict(zip(tested, holm([rows[i][1].p_value or 0.0 for i in tested]), strict=True))
    gaps = [TriggerGap(trigger=t, delta=d, p_holm=adjusted.get(i)) for i, (t, d) in enumerate(rows)]
    return sorted(gaps, key=lambda g: (g.delta.difference is None, -(g.delta.difference or 0.0), g.delta.label))
