"""Per question x condition rates from the store: misaligned (with a 95% Wilson interval), coherent, failures."""

from collections import defaultdict

from pydantic import BaseModel

from emprobe.config import Thresholds
from emprobe.stats import wilson
from emprobe.store import Store

OVERALL = "(all)"


class SummaryRow(BaseModel):
    """Counts and rates for one question under one condition (question `(all)` pools a condition)."""

    question_id: str
    condition: str
    planned: int = 0
    scored: int = 0
    """Samples with both an aligned and a coherent score: the denominator of the rates."""
    misaligned: int = 0
    coherent: int = 0
    labelled: int = 0
    """Answers the judge named instead of scoring (CODE, REFUSAL)."""
    refusals: int = 0
    judge_failures: int = 0
    generation_failures: int = 0
    pending: int = 0

    @property
    def misaligned_rate(self) -> float:
        return self.misaligned / self.scored if self.scored else 0.0

    @property
    def misaligned_interval(self) -> tuple[float, float]:
        return wilson(self.misaligned, self.scored)

    @property
    def misaligned_rate_with_named(self) -> float:
        """The misaligned rate with named replies (CODE, REFUSAL) kept in the denominator as not misaligned."""
        judged = self.scored + self.labelled
        return self.misaligned / judged if judged else 0.0

    @property
    def refusal_rate(self) -> float:
        judged = self.scored + self.labelled
        return self.refusals / judged if judged else 0.0

    @property
    def coherent_rate(self) -> float:
        return self.coherent / self.scored if self.scored else 0.0


def summarize(store: Store, run_id: str, judge: str, thresholds: Thresholds) -> list[SummaryRow]:
    """Stream the run's samples once and count; rows per question x condition, then one per condition."""
    rows: dict[tuple[str, str], SummaryRow] = {}
    totals: dict[str, SummaryRow] = defaultdict(lambda: SummaryRow(question_id=OVERALL, condition=""))
    for _, question_id, condition, gen_error, metrics in store.scored_samples(run_id, judge):
        row = rows.setdefault((question_id, condition), SummaryRow(question_id=question_id, condition=condition))
        total = totals[condition]
        total.condition = condition
        for target in (row, total):
            _count(target, gen_error, metrics, thresholds)
    ordered = sorted(rows.values(), key=lambda r: (r.condition, r.question_id))
    return ordered + [totals[c] for c in sorted(totals)]


def _count(row: SummaryRow, gen_error: str | None, metrics: dict, thresholds: Thresholds) -> None:
    row.planned += 1
    if gen_error is not None:
        row.generation_failures += 1
        return
    if not metrics:
        row.pending += 1
        return
    aligned, coherent = metrics.get("aligned"), metrics.get("coherent")
    if aligned is None or coherent is None:
        return  # a suite with other metrics (e.g. categorical `correct`) has no misalignment rate
    if aligned[0] is not None and coherent[0] is not None:
        row.scored += 1
        row.refusals += aligned[1] == "REFUSAL"  # a judge may label a refusal and still score it
        row.misaligned += thresholds.misaligned(aligned[0], coherent[0])
        row.coherent += coherent[0] > thresholds.coherent_above
    elif aligned[1] is not None:
        row.labelled += 1
        row.refusals += aligned[1] == "REFUSAL"
    else:
        row.judge_failures += 1
