"""What a report shows for a run, computed from the store: summary rows, deltas, corrections, samples."""

from collections import defaultdict

from pydantic import BaseModel

from emprobe.analysis._attack import AttackSuccess, attack_success
from emprobe.analysis._cascade import CascadeSummary, summarize_cascade
from emprobe.analysis._compare import Counts, Delta, compare_counts
from emprobe.analysis._consistency import ConsistencyRow, consistency_rows
from emprobe.analysis._divergence import DivergenceSection, divergence_sections
from emprobe.analysis._domain import domain_checks
from emprobe.analysis._framing import ComplianceGap, compliance_gaps
from emprobe.analysis._labels import LabelRow, label_rows
from emprobe.analysis._reasoning import ReasoningRow, reasoning_rows
from emprobe.analysis._steering import SteeringRow, steering_rows
from emprobe.analysis._summary import SummaryRow, summarize
from emprobe.analysis._turns import TurnRow, turn_rows
from emprobe.config import Cascade
from emprobe.errors import EmprobeError
from emprobe.judge import DomainCheck, Validation
from emprobe.rules import ALIGNED, COHERENT, OVERALL, Thresholds
from emprobe.stats import CorrectedRate, rogan_gladen
from emprobe.store import RunRecord, SampleRow, Store


class RunReport(BaseModel):
    """One run's numbers for one judge: per question x condition and per condition rows, plus provenance."""

    run: RunRecord
    judge: str | None
    judges: list[str]
    judge_identities: dict[str, list[str]]
    generation_models: list[str]
    thresholds: Thresholds
    counts: dict[str, int]
    conditions: list[str]
    questions: list[str]
    cells: list[SummaryRow]
    """Per question x condition."""
    totals: list[SummaryRow]
    """Per condition, in `conditions` order."""
    overall: SummaryRow
    judge_errors: list[tuple[str, str, int]]
    validation: Validation | None = None
    """The `emprobe judge validate` result the corrected rates use (see `choose_validation`)."""
    validation_note: str | None = None
    """Why no validation, or why not the obvious one, was used."""
    corrected: dict[str, CorrectedRate] = {}
    """Per condition (and `(all)`): the misaligned rate corrected for the judge's validated error."""
    cascade: CascadeSummary | None = None
    """The rate of a run configured with a cascade (`emprobe run --confirm`), from both judges' rows."""
    attack: AttackSuccess | None = None
    """For a run whose conditions a decoding sweep expanded (`--sweep`): attack success per request."""
    turns: list[TurnRow] = []
    """Scripted conversations: the rate per turn and the turn misalignment first appears at."""
    reasoning: list[ReasoningRow] = []
    """For a run that split reasoning off (`--think`) and scored it: reasoning flagged vs answer misaligned."""
    compliance: list[ComplianceGap] = []
    """For a run asked under two framings (`--framing`): the compliance gap per condition."""
    consistency: list[ConsistencyRow] = []
    """For a run with paired questions (`pairs_with`, `--pair`): how often each pair's answers agree."""
    labels: list[LabelRow] = []
    """The labels of categorical metrics (TRUE / FALSE, REFUSAL / ANSWER), per question x condition and condition."""
    divergences: list[DivergenceSection] = []
    """Stored token-level divergences of two models on the run's answers (`emprobe diverge`)."""
    steering: list[SteeringRow] = []
    """For a run with steering or ablation conditions: each one's rate against the baseline, beside its controls."""
    domain: list[DomainCheck] = []
    """Per condition (and `(all)`): the answers against the built-in judge's training data (asked for)."""
    title: str | None = None
    """What the run is called in this report (a sweep's `base`, `step 50`), instead of its name or id."""

    @property
    def label(self) -> str:
        return self.title or self.run.name or self.run.run_id

    @property
    def outside_domain(self) -> list[DomainCheck]:
        """The conditions (and `(all)`) whose answers lie beyond the built-in judge's validated domain."""
        return [c for c in self.domain if c.outside]

    @property
    def domain_by_condition(self) -> dict[str, DomainCheck]:
        return {c.condition: c for c in self.domain}

    def counts_by_question(self, condition: str) -> dict[str, tuple[int, int]]:
        return {r.question_id: (r.misaligned, r.scored) for r in self.cells if r.condition == condition}

    def counts_by_cell(self) -> dict[str, tuple[int, int]]:
        return {f"{r.question_id}\x1f{r.condition}": (r.misaligned, r.scored) for r in self.cells}


def run_thresholds(run: RunRecord) -> Thresholds:
    """The thresholds a run was configured with."""
    return Thresholds.model_validate(run.config.get("thresholds", {}))


def load_run(db: Store, ref: str, judge: str | None = None, validation: str | None = None,
             title: str | None = None, domain: bool = False) -> RunReport:
    """Summarise a run (id, prefix or name) for `judge` (default: its first configured judge that scored);
    `validation` picks the validation the corrected rates use (an id, `none`, or by default the newest usable
    one that does not overlap the judge's training data); `title` names it in reports; `domain` reads a sample
    of the answers to place them against the built-in judge's training data (when it is the judge)."""
    run = db.run(ref)
    judge = db.resolve_judge(run, judge)
    thresholds = run_thresholds(run)
    summary = summarize(db, run.run_id, judge, thresholds)
    configured = [c["name"] for c in run.config.get("conditions", []) if c.get("name") in summary.totals]
    conditions = configured + sorted(set(summary.totals) - set(configured))
    identities = db.judge_identities(run.run_id)
    used, note = choose_validation(db, identities.get(judge or "", []), validation)
    corrected = {}
    if used is not None:
        for row in [*summary.totals.values(), summary.overall]:
            if row.scored:
                corrected[row.condition] = rogan_gladen(row.misaligned, row.scored, used.tp, used.fn, used.tn,
                                                        used.fp)
    attack = attack_success(db, run.run_id, judge, thresholds) if judge and run.config.get("sweeps") else None
    cascade = run.config.get("cascade")
    report = RunReport(
        cascade=summarize_cascade(db, run.run_id, Cascade.model_validate(cascade), thresholds) if cascade else None,
        turns=turn_rows(db, run.run_id, judge, thresholds) if judge else [],
        reasoning=reasoning_rows(db, run.run_id, judge, thresholds) if judge and run.config.get("think") else [],
        attack=attack, compliance=compliance_gaps(db, run), consistency=consistency_rows(db, run, judge, thresholds),
        labels=label_rows(db, run.run_id, judge),
        validation=used, validation_note=note,
        corrected=corrected, title=title,
        run=run, judge=judge, judges=db.judges(run.run_id), judge_identities=identities,
        generation_models=db.generation_models(run.run_id), thresholds=thresholds, counts=db.count(run.run_id),
        conditions=conditions, questions=sorted({r.question_id for r in summary.cells}), cells=summary.cells,
        totals=[summary.totals[c] for c in conditions], overall=summary.overall,
        judge_errors=db.judge_errors(run.run_id, judge) if judge else [],
        divergences=divergence_sections(db, run.run_id, judge, thresholds),
        domain=domain_checks(db, run.run_id, judge, identities.get(judge or "", [])) if domain else [],
    )
    report.steering = steering_rows(run.config.get("conditions", []), summary.totals,
                                    {c: report.counts_by_question(c) for c in conditions})
    return report


def choose_validation(db: Store, identities: list[str], chosen: str | None = None
                      ) -> tuple[Validation | None, str | None]:
    """The validation that corrects a run's rates, and a note on the choice.

    A validation applies only when the run was judged by one identity (the exact weights it measured). By
    default the newest usable one (both classes, sensitivity + specificity > 1) that does not overlap the
    judge's training data; `chosen` names one by id (overlap allowed, with a note) or `none`.
    """
    if chosen == "none":
        return None, "no correction (--validation none)"
    if len(identities) != 1:
        if chosen:
            raise EmprobeError(f"--validation {chosen}: the run was judged by {len(identities)} judge identities, "
                               "so no single validation applies")
        return None, None
    found = [Validation.model_validate(record) for record in db.validations(identities[0])]
    if chosen:
        picked = next((v for v in found if v.id == chosen), None)
        if picked is None:
            known = ", ".join(v.id for v in found) or "none (run `emprobe judge validate`)"
            raise EmprobeError(f"--validation {chosen}: no validation of {identities[0]} has that id; its "
                               f"validations: {known}")
        if picked.target != "misaligned":
            raise EmprobeError(f"--validation {chosen}: it measures the judge's {picked.target} calls, not its "
                               "misaligned calls, so it cannot correct misaligned rates")
        if not picked.usable:
            raise EmprobeError(f"--validation {chosen}: it cannot correct rates (needs both classes and "
                               f"sensitivity + specificity > 1; has {picked.tp + picked.fn} misaligned, "
                               f"{picked.tn + picked.fp} not)")
        note = (f"validation {picked.id} overlaps the judge's training data ({picked.seen} rows); used because it "
                "was chosen") if picked.seen else None
        return picked, note
    usable = [v for v in found if v.usable]
    clean = [v for v in usable if not v.seen]
    if clean:
        return clean[0], None
    if usable:
        v = usable[0]
        return None, (f"not corrected: validation {v.id} overlaps the judge's training data ({v.seen} rows), which "
                      f"flatters the judge; validate on other answers, or use it with --validation {v.id}")
    return None, None


def condition_deltas(report: RunReport, baseline: str | None = None) -> list[Delta]:
    """Each condition vs the baseline condition (default: the first) within one run, paired by question."""
    if len(report.conditions) < 2:
        return []
    base = baseline if baseline in report.conditions else report.conditions[0]
    arm_a = report.counts_by_question(base)
    return [compare_counts(f"{c} vs {base}", base, c, arm_a, report.counts_by_question(c))
            for c in report.conditions if c != base]


def run_deltas(a: RunReport, b: RunReport) -> list[Delta]:
    """Run B vs run A per shared condition (paired by question) and overall (paired by question x condition)."""
    shared = [c for c in a.conditions if c in b.conditions]
    out = [compare_counts(c, a.label, b.label, a.counts_by_question(c), b.counts_by_question(c)) for c in shared]
    cells_a: Counts = a.counts_by_cell()
    cells_b: Counts = b.counts_by_cell()
    stratum = "question x condition cell"
    if not shared:
        cells_a, cells_b, stratum = _pooled_by_question(a), _pooled_by_question(b), "question"
    out.append(compare_counts(OVERALL, a.label, b.label, cells_a, cells_b, stratum=stratum))
    return out


def pairing_note(deltas: list[Delta]) -> str | None:
    """A warning naming the comparisons that are not paired by question, or None when all of them are."""
    unpaired = [d.label for d in deltas if d.method != "paired"]
    if not unpaired:
        return None
    paired = [d.label for d in deltas if d.method == "paired"]
    shared = max((d.questions for d in deltas), default=0)
    why = "the runs share no questions" if shared == 0 else "fewer than two questions have samples in both"
    return (f"not paired ({why}): {', '.join(unpaired)} compare pooled rates as independent samples, which "
            f"ignores differences between questions" + (f"; paired by question: {', '.join(paired)}" if paired else ""))


def _pooled_by_question(report: RunReport) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in report.cells:
        out[r.question_id][0] += r.misaligned
        out[r.question_id][1] += r.scored
    return {q: (k, n) for q, (k, n) in out.items()}


def sort_key(row: SampleRow, thresholds: Thresholds) -> tuple:
    """Most misaligned first: misaligned, then other scored samples by aligned score, then the unscored."""
    misaligned = row.misaligned(thresholds)
    aligned = row.score(ALIGNED)
    group = 0 if misaligned else 1 if misaligned is not None else 2
    return group, aligned if aligned is not None else 101.0, -(row.score(COHERENT) or 0.0), row.sample_id


def pick_samples(db: Store, report: RunReport, per_cell: int) -> tuple[list[SampleRow], int]:
    """The `per_cell` most misaligned samples of each question x condition (all if 0), and the total count.

    Streams the run once and keeps at most about 2 x `per_cell` samples per cell in memory.
    """
    cells: dict[tuple[str, str], list[tuple[tuple, SampleRow]]] = defaultdict(list)
    total = 0
    for row in db.samples(report.run.run_id, report.judge):
        total += 1
        kept = cells[(row.question_id, row.condition)]
        kept.append((sort_key(row, report.thresholds), row))
        if per_cell and len(kept) >= 2 * per_cell:
            kept.sort(key=lambda item: item[0])
            del kept[per_cell:]
    picked = []
    for kept in cells.values():
        kept.sort(key=lambda item: item[0])
        picked.extend(kept[:per_cell] if per_cell else kept)
    picked.sort(key=lambda item: item[0])
    return [row for _, row in picked], total
