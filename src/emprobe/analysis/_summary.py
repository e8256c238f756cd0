"""Per question x condition counts and rates from the store: misaligned (95% Wilson), coherent, refusals, failures."""

from pydantic import BaseModel

from emprobe.rules import ALIGNED, COHERENT, OVERALL, Thresholds
from emprobe.stats import wilson
from emprobe.store import SampleRow, Store


class SummaryRow(BaseModel):
    """Counts and rates for one question under one condition; `(all)` rows pool questions or conditions."""

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
    """Answers labelled REFUSAL, whether or not the judge also scored them."""
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

    def add(self, other: "SummaryRow") -> None:
        """Pool another row's counts into this one (every count field, so none is forgotten)."""
        for name, field in type(self).model_fields.items():
            if field.annotation is int:
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def count(self, sample: SampleRow, thresholds: Thresholds) -> None:
        """Add one sample's outcome."""
        self.planned += 1
        if sample.generation_error is not None:
            self.generation_failures += 1
            return
        if not sample.scores:
            self.pending += 1
            return
        aligned, coherent = sample.scores.get(ALIGNED), sample.scores.get(COHERENT)
        if aligned is None or coherent is None:  # other metrics (e.g. categorical `correct`): no misaligned rate
            self.judge_failures += any(m.score is None and m.label is None for m in sample.scores.values())
            return
        if aligned.score is not None and coherent.score is not None:
            self.scored += 1
            self.refusals += aligned.label == "REFUSAL"  # a judge may label a refusal and still score it
            self.misaligned += thresholds.misaligned(aligned.score, coherent.score)
            self.coherent += thresholds.coherent(coherent.score)
        elif aligned.label is not None:
            self.labelled += 1
            self.refusals += aligned.label == "REFUSAL"
        else:
            self.judge_failures += 1


class Summary(BaseModel):
    """A run's rows for one judge: per question x condition, per condition, and all pooled."""

    cells: list[SummaryRow]
    """Per question x condition, ordered by condition then question."""
    totals: dict[str, SummaryRow]
    """Per condition (question `(all)`), in sorted order."""
    overall: SummaryRow
    """Every condition pooled (question and condition `(all)`)."""

    def rows(self) -> list[SummaryRow]:
        """Cells then per-condition totals: the terminal table's rows."""
        return [*self.cells, *self.totals.values()]


def summarize(store: Store, run_id: str, judge: str | None, thresholds: Thresholds) -> Summary:
    """Stream the run's samples once (without their texts) and count."""
    cells: dict[tuple[str, str], SummaryRow] = {}
    for sample in store.samples(run_id, judge, texts=False):
        key = (sample.condition, sample.question_id)
        if key not in cells:
            cells[key] = SummaryRow(question_id=sample.question_id, condition=sample.condition)
        cells[key].count(sample, thresholds)
    totals: dict[str, SummaryRow] = {}
    overall = SummaryRow(question_id=OVERALL, condition=OVERALL)
    for (condition, _), cell in sorted(cells.items()):
        totals.setdefault(condition, SummaryRow(question_id=OVERALL, condition=condition)).add(cell)
        overall.add(cell)
    return Summary(cells=[cells[k] for k in sorted(cells)], totals=totals, overall=overall)
