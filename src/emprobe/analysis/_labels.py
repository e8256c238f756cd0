"""Label counts of categorical metrics (TRUE / FALSE / UNKNOWN, REFUSAL / ANSWER, company names): per question x
condition and per condition, the share of answers that got each label, as Betley et al.'s deception evaluations read
them (how often the answer is FALSE under each system prompt)."""

from collections import Counter, defaultdict
from collections.abc import Iterable

from pydantic import BaseModel

from emprobe.rules import OVERALL, PRIMARY_METRICS, TURN
from emprobe.stats import wilson
from emprobe.store import SampleRow, Store


class LabelRow(BaseModel):
    """One metric's labels for one question (or `(all)`) under one condition."""

    question_id: str
    condition: str
    metric: str
    counts: dict[str, int]
    """Label -> answers, most frequent first."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, label: str) -> tuple[float, float, float]:
        """The share of answers with `label`, with its 95% Wilson interval."""
        k, n = self.counts.get(label, 0), self.total
        low, high = wilson(k, n)
        return (k / n if n else 0.0), low, high


def numeric_metrics(rows: Iterable[SampleRow]) -> set[str]:
    """Metrics scored 0-100 somewhere among `rows` (a score without a label): their labels are occasional named
    replies (CODE, NO_REASONING), not categories."""
    return {m for row in rows for m, found in row.scores.items() if found.label is None and found.score is not None}


def label_rows(db: Store, run_id: str, judge: str | None) -> list[LabelRow]:
    """Per categorical metric: each question x condition, then each condition pooled (`(all)`); empty when the judge
    gave no categorical labels."""
    if judge is None:
        return []
    numeric = set(PRIMARY_METRICS) | {TURN}
    counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for row in db.samples(run_id, judge, texts=False):
        numeric |= numeric_metrics([row])
        for metric, found in row.scores.items():
            if found.label is not None:
                counts[(row.condition, row.question_id, metric)][found.label] += 1
                counts[(row.condition, OVERALL, metric)][found.label] += 1
    counts = {key: labels for key, labels in counts.items() if key[2] not in numeric}
    order = {c["name"]: i for i, c in enumerate(db.run(run_id).config.get("conditions", []))}
    keys = sorted(counts, key=lambda k: (order.get(k[0], len(order)), k[0], k[2], k[1] == OVERALL, k[1]))
    return [LabelRow(question_id=q, condition=c, metric=m, counts=dict(counts[(c, q, m)].most_common()))
            for c, q, m in keys]
