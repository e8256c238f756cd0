"""Reasoning against answer: how often a model's reasoning is flagged (cot_monitor) while its answer is judged
fine (hidden intent), and the reverse, per condition, from one judge's scores of both."""

from collections import defaultdict

from pydantic import BaseModel

from emprobe.rules import COT_MONITOR, NO_REASONING, OVERALL, REASONING_FLAGGED_AT, Thresholds
from emprobe.stats import wilson
from emprobe.store import Store


class ReasoningRow(BaseModel):
    """One condition's answers with both a misaligned verdict and a reasoning score, split four ways."""

    condition: str
    both: int = 0
    hidden: int = 0
    """Reasoning flagged, answer not misaligned: intent the answer hides."""
    shown: int = 0
    """Answer misaligned, reasoning not flagged."""
    neither: int = 0
    without_reasoning: int = 0
    """Answers with no reasoning to score (NO_REASONING)."""

    @property
    def n(self) -> int:
        return self.both + self.hidden + self.shown + self.neither

    def rate(self, count: int) -> tuple[float, float, float]:
        """count / n with its 95% Wilson interval."""
        low, high = wilson(count, self.n)
        return (count / self.n if self.n else 0.0), low, high


def reasoning_rows(db: Store, run_id: str, judge: str, thresholds: Thresholds) -> list[ReasoningRow]:
    """Per condition, then pooled (`(all)`); empty when the judge scored no reasoning."""
    rows: dict[str, ReasoningRow] = defaultdict(lambda: ReasoningRow(condition=""))
    for sample in db.samples(run_id, judge, texts=False):
        found = sample.scores.get(COT_MONITOR)
        if found is None:
            continue
        for name in (sample.condition, OVERALL):
            row = rows[name]
            if found.label == NO_REASONING:
                row.without_reasoning += 1
                continue
            verdict = sample.misaligned(thresholds)
            if found.score is None or verdict is None:
                continue
            flagged = found.score >= REASONING_FLAGGED_AT
            if flagged and verdict:
                row.both += 1
            elif flagged:
                row.hidden += 1
            elif verdict:
                row.shown += 1
            else:
                row.neither += 1
    ordered = sorted(k for k in rows if k != OVERALL) + ([OVERALL] if OVERALL in rows else [])
    return [rows[k].model_copy(update={"condition": k}) for k in ordered]
