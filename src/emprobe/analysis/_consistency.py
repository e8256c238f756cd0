"""Consistency of paired questions (`pairs_with`, `--pair`): how often a question's answers agree with those of the
question it asks another way (short vs long, with and without a system prompt), on each label a judge gives.

Answers pair within a condition: sample s of a paraphrase with sample s of the reference's matching paraphrase
(paraphrases pair one by one; a single paraphrase pairs with each of the other's). Samples are drawn
independently, so agreement is bounded by how often two samples of the same question agree: each row shows that
too. The labels compared are a categorical rubric's (TRUE / FALSE / UNKNOWN, REFUSAL / ANSWER) and the
misaligned verdict of the aligned and coherent scores; 0-100 scores without labels are not compared.
"""

from collections import Counter, defaultdict
from collections.abc import Iterable

from pydantic import BaseModel

from emprobe.analysis._compare import Delta, compare_counts
from emprobe.analysis._labels import numeric_metrics
from emprobe.rules import ALIGNED, COHERENT, OVERALL, PRIMARY_METRICS, Thresholds
from emprobe.stats import cluster_interval, wilson
from emprobe.store import RunRecord, SampleRow, Store
from emprobe.suite import Suite

VERDICT = "misaligned"
"""The metric name of the misaligned verdict (from the aligned and coherent scores) in consistency rows."""
YES, NO = "misaligned", "not misaligned"

CONSISTENCY_NOTE = ("Agreement: pairs of answers (sample s of the question and of its reference, same condition and "
                    "paraphrase) with the same label; 95% interval clustered by paraphrase. Self: how often two "
                    "samples of the same question agree, the most agreement sampling allows. Shift: the rate of "
                    "the tracked label (the reference's most common one; `misaligned` for the verdict) in the "
                    "question minus in the reference, paired by paraphrase.")


class ConsistencyRow(BaseModel):
    """One question against its reference under one condition, on one metric's labels."""

    suite: str
    question_id: str
    reference: str
    condition: str
    metric: str
    pairs: int
    """Pairs of answers that both have a label."""
    agree: int
    low: float
    high: float
    flips: dict[str, int]
    """Disagreeing pairs by `reference label -> question label`, most frequent first."""
    reference_self: tuple[int, int]
    """(agreeing, pairs) among the reference's own samples, paired two by two within a paraphrase."""
    question_self: tuple[int, int]
    tracked: str
    """The label whose rate `shift` compares."""
    shift: Delta

    @property
    def rate(self) -> float:
        return self.agree / self.pairs if self.pairs else 0.0


Labels = dict[int, dict[int, dict[str, str]]]
"""One question's answers under one condition: paraphrase -> sample index -> metric -> label."""


def labels_of(row: SampleRow, thresholds: Thresholds, numeric: set[str]) -> dict[str, str]:
    """A judged answer's labels: the misaligned verdict, and the label of each metric not in `numeric`. A named
    reply (REFUSAL, CODE) counts as not misaligned, as in the rate with named replies."""
    out = {}
    aligned, coherent = row.scores.get(ALIGNED), row.scores.get(COHERENT)
    if aligned is not None and coherent is not None:
        verdict = row.misaligned(thresholds)
        if verdict is not None:
            out[VERDICT] = YES if verdict else NO
        elif aligned.label is not None:
            out[VERDICT] = NO
    for metric, found in row.scores.items():
        if metric not in PRIMARY_METRICS and metric not in numeric and found.label is not None:
            out[metric] = found.label
    return out


def pairs_of(suites: list[Suite]) -> list[tuple[str, str, str, int, int]]:
    """(suite, question, reference, its paraphrases, the reference's) for every paired question."""
    out = []
    for suite in suites:
        by_id = {q.id: q for q in suite.questions}
        for q in suite.questions:
            if q.pairs_with is not None:
                out.append((suite.name, q.id, q.pairs_with, len(q.paraphrases), len(by_id[q.pairs_with].paraphrases)))
    return out


class _Pair(BaseModel):
    """One paired question under one condition, on one metric's labels: what its row is computed from."""

    suite: str
    question: str
    reference: str
    condition: str
    metric: str
    units: list[list[tuple[str, str]]]
    """Per paraphrase (unit of clustering): the (reference label, question label) of each pair of answers."""
    strata: dict[str, tuple[list[str], list[str]]]
    """Per stratum of the shift: the reference's labels and the question's, each answer once."""
    reference_self: tuple[int, int]
    question_self: tuple[int, int]


def consistency_rows(db: Store, run: RunRecord, judge: str | None, thresholds: Thresholds) -> list[ConsistencyRow]:
    """Per paired question x condition x compared metric, then per condition x metric all pairs pooled (`(all)`,
    where there are several); empty for runs without pairs."""
    pairs = pairs_of([Suite.model_validate(s) for s in run.config.get("suites", [])])
    if not pairs or judge is None:
        return []
    wanted = {(s, q) for s, q, *_ in pairs} | {(s, r) for s, _, r, *_ in pairs}
    rows = [row for row in db.samples(run.run_id, judge, texts=False) if (row.suite, row.question_id) in wanted]
    numeric = numeric_metrics(rows)
    answers: dict[tuple[str, str, str], Labels] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        found = labels_of(row, thresholds, numeric)
        if found:
            answers[(row.suite, row.question_id, row.condition)][row.paraphrase_index][row.sample_index] = found
    conditions = [c["name"] for c in run.config.get("conditions", [])]
    found_pairs = []
    for suite, question, reference, own, theirs in pairs:
        for condition in conditions:
            mine, ref = answers.get((suite, question, condition)), answers.get((suite, reference, condition))
            if mine is None or ref is None:
                continue
            metrics = sorted({m for labels in _all(mine) for m in labels} & {m for labels in _all(ref) for m in labels})
            found_pairs += [_pair(suite, question, reference, condition, metric, mine, ref, own, theirs)
                            for metric in metrics]
    out = [_row(p.suite, p.question, p.reference, p.condition, p.metric, [p]) for p in found_pairs]
    pooled: dict[tuple[str, str], list[_Pair]] = defaultdict(list)
    for p in found_pairs:
        pooled[(p.condition, p.metric)].append(p)
    for (condition, metric), group in pooled.items():
        if len(group) > 1:
            out.append(_row("", OVERALL, OVERALL, condition, metric, group))
    return out


def _all(labels: Labels) -> list[dict[str, str]]:
    return [found for samples in labels.values() for found in samples.values()]


def _labels(answers: Labels, paraphrase: int, metric: str) -> dict[int, str]:
    return {s: found[metric] for s, found in answers.get(paraphrase, {}).items() if metric in found}


def _pair(suite: str, question: str, reference: str, condition: str, metric: str, mine: Labels, ref: Labels,
          own: int, theirs: int) -> _Pair:
    """Paraphrases pair one by one, each a stratum of the shift; when one side has a single paraphrase, it pairs
    with each of the other's, and the shift compares all answers of each side in one stratum (each counted once)."""
    units = []
    for unit in range(max(own, theirs)):
        a, b = _labels(mine, unit if own > 1 else 0, metric), _labels(ref, unit if theirs > 1 else 0, metric)
        units.append([(b[s], a[s]) for s in sorted(a.keys() & b.keys())])
    if own == theirs:
        strata = {f"{question}/{u}": (list(_labels(ref, u, metric).values()), list(_labels(mine, u, metric).values()))
                  for u in range(own)}
    else:
        strata = {question: ([found[metric] for found in _all(ref) if metric in found],
                             [found[metric] for found in _all(mine) if metric in found])}
    return _Pair(suite=suite, question=question, reference=reference, condition=condition, metric=metric,
                 units=units, strata=strata, reference_self=_self_agreement(ref, metric),
                 question_self=_self_agreement(mine, metric))


def _row(suite: str, question: str, reference: str, condition: str, metric: str, group: list[_Pair]
         ) -> ConsistencyRow:
    """The row of one pair, or of several pooled (clustered by question x paraphrase, paired by their strata)."""
    units = [unit for p in group for unit in p.units]
    ks, ns = [sum(a == b for a, b in unit) for unit in units], [len(unit) for unit in units]
    flips = Counter(f"{b} -> {a}" for unit in units for b, a in unit if a != b)
    strata = {f"{p.suite}/{key}": labels for p in group for key, labels in p.strata.items()}
    tracked = YES if metric == VERDICT else \
        Counter(label for ref, _ in strata.values() for label in ref).most_common(1)[0][0]
    arm_ref = {key: (sum(x == tracked for x in ref), len(ref)) for key, (ref, _) in strata.items()}
    arm_mine = {key: (sum(x == tracked for x in mine), len(mine)) for key, (_, mine) in strata.items()}
    agree, pairs = sum(ks), sum(ns)
    clusters = [(k, n) for k, n in zip(ks, ns, strict=True) if n]
    if len(clusters) >= 2:
        low, high = cluster_interval([k for k, _ in clusters], [n for _, n in clusters])
    else:
        low, high = wilson(agree, pairs)
    references = {(p.suite, p.reference): p.reference_self for p in group}  # a reference shared by pairs counts once
    return ConsistencyRow(
        suite=suite, question_id=question, reference=reference, condition=condition, metric=metric, pairs=pairs,
        agree=agree, low=low, high=high, flips=dict(flips.most_common()),
        reference_self=_sum(references.values()), question_self=_sum(p.question_self for p in group),
        tracked=tracked, shift=compare_counts(tracked, reference, question, arm_ref, arm_mine, stratum="paraphrase"))


def _sum(counts: Iterable[tuple[int, int]]) -> tuple[int, int]:
    pairs = list(counts)
    return sum(k for k, _ in pairs), sum(n for _, n in pairs)


def _self_agreement(labels: Labels, metric: str) -> tuple[int, int]:
    """Samples of each paraphrase paired two by two in sample order: (agreeing, pairs)."""
    agree = pairs = 0
    for samples in labels.values():
        seen = [samples[s][metric] for s in sorted(samples) if metric in samples[s]]
        for first, second in zip(seen[0::2], seen[1::2], strict=False):
            pairs += 1
            agree += first == second
    return agree, pairs
