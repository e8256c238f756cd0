"""Compact rich tables for the terminal: summaries, rates with intervals per condition, deltas, judge failures."""

from rich.table import Table
from rich.text import Text

from emprobe.analysis import (
    BEST_OF_N_NOTE,
    CONSISTENCY_NOTE,
    STEERING_NOTE,
    AttackSuccess,
    CascadeSummary,
    ConsistencyRow,
    Delta,
    LabelRow,
    ReasoningRow,
    RunReport,
    SteeringRow,
    SummaryRow,
    SweepReport,
    TriggerGap,
    TurnRow,
    baseline_note,
)
from emprobe.judge import DomainCheck
from emprobe.report._format import NONE, p_value, pct, signed_pct
from emprobe.rules import OVERALL
from emprobe.stats import wilson
from emprobe.store import LabelCount


def summary_table(rows: list[SummaryRow], title: str) -> Table:
    """One line per question x condition, then the pooled line of each condition."""
    table = Table(title=Text(title), title_justify="left")
    table.add_column("question")
    table.add_column("condition")
    for name in ("n", "misaligned", "95% CI", "incl. named", "coherent", "refusal", "named", "judge fail",
                 "gen fail"):
        table.add_column(name, justify="right")
    for r in rows:
        lo, hi = r.misaligned_interval
        rates = (f"{r.misaligned_rate:.1%}", f"{lo:.1%}-{hi:.1%}", f"{r.misaligned_rate_with_named:.1%}",
                 f"{r.coherent_rate:.1%}") if r.scored else (NONE,) * 4  # no rate where nothing was scored
        refusal = f"{r.refusal_rate:.1%}" if r.scored + r.labelled else NONE
        table.add_row(Text(r.question_id), Text(r.condition), str(r.scored), *rates, refusal, str(r.labelled),
                      str(r.judge_failures), str(r.generation_failures),
                      style="bold" if r.question_id == OVERALL else None)
    return table


def cascade_table(summary: CascadeSummary) -> Table:
    """Per condition and overall: the cascade's rate and interval, and the confirming calls it spent."""
    c = summary.cascade
    title = f"cascade: {c.screen} screens every answer, {c.confirm} confirms {c.describe()} (seed {c.seed})"
    table = Table(title=Text(title), title_justify="left")
    for name in ("condition", "answers", "screened in", "audited", "confirmed", "misaligned", "95% CI", "pending"):
        table.add_column(name, justify="left" if name == "condition" else "right")
    for row in [*summary.totals.values(), summary.overall]:
        e = row.estimate
        table.add_row(Text(row.condition), str(e.answers), str(row.screened_in), str(row.audited),
                      str(e.confirmed), pct(e.rate), f"{pct(e.low)}-{pct(e.high)}", str(row.pending),
                      style="bold" if row.condition == OVERALL else None)
    table.caption = Text(f"confirming calls: {summary.overall.estimate.confirmed} answers judged by {c.confirm}; "
                         f"judging every answer would have cost {summary.overall.estimate.answers}")
    table.caption_justify = "left"
    return table


def label_table(counts: list[LabelCount], label: str, title: str) -> Table:
    """Per condition: how many answers a judge gave `label`, with a 95% Wilson interval."""
    table = Table("condition", "answers", label.lower() + "s", "rate", "95% CI", title=Text(title),
                  title_justify="left")
    for c in counts:
        lo, hi = wilson(c.labelled, c.answers)
        table.add_row(Text(c.condition), str(c.answers), str(c.labelled), f"{c.labelled / c.answers:.1%}",
                      f"{lo:.1%}-{hi:.1%}")
    return table


def rates_table(report: RunReport) -> Table:
    """One line per condition and one for the whole run: rate, 95% Wilson interval, coherent, failures."""
    table = Table(title=Text(f"{report.label}: {report.run.model}, judged by {report.judge or 'nobody yet'}"),
                  title_justify="left")
    corrected = ("corrected", "corrected CI") if report.corrected else ()
    domain = {c: DOMAIN_WORDS[check.outside] for c, check in report.domain_by_condition.items()}
    for name in ("condition", "n", "misaligned", "95% CI", *corrected, "coherent", "refusal", "named",
                 "judge fail", "gen fail", "pending", *(("judge domain",) if domain else ())):
        table.add_column(name, justify="left" if name == "condition" else "right")
    for row in [*report.totals, report.overall]:
        lo, hi = row.misaligned_interval
        rate, ci, coherent = ((f"{row.misaligned} ({pct(row.misaligned_rate)})", f"{pct(lo)}-{pct(hi)}",
                               pct(row.coherent_rate, 1)) if row.scored else (NONE,) * 3)
        fixed = report.corrected.get(row.condition)
        fixed_cells = (pct(fixed.corrected), f"{pct(fixed.low)}-{pct(fixed.high)}") if fixed else (NONE, NONE)
        refusal = pct(row.refusal_rate, 1) if row.scored + row.labelled else NONE
        table.add_row(Text(row.condition), str(row.scored), rate, ci, *fixed_cells[:len(corrected)], coherent,
                      refusal, str(row.labelled), str(row.judge_failures), str(row.generation_failures),
                      str(row.pending), *((domain.get(row.condition, NONE),) if domain else ()),
                      style="bold" if row is report.overall else None)
    notes = []
    if report.validation:
        v = report.validation
        notes.append(f"corrected: Rogan-Gladen for {report.judge}'s sensitivity {v.sensitivity:.3f} and "
                     f"specificity {v.specificity:.4f} (validation {v.id}: {v.labelled} reference rows, {v.reference})")
    if report.validation_note:
        notes.append(report.validation_note)
    if report.outside_domain:
        notes.append(outside_note(report.outside_domain))
    if notes:
        table.caption = Text("\n".join(notes))
    return table


DOMAIN_WORDS = {False: "inside", True: "OUTSIDE"}


def outside_note(outside: list[DomainCheck]) -> str:
    """What a rate outside the built-in judge's validated domain means, and what to do about it."""
    names = ", ".join(c.condition for c in outside if c.condition != OVERALL or len(outside) == 1)
    return (f"outside the built-in judge's validated domain: {names}. Its answers are further from the judge's "
            f"training data (distance {max(c.distance for c in outside):.3f}) than held-out model families on known "
            f"questions ({outside[0].validated:.3f}); treat the rate as unconfirmed and confirm it with a strong "
            "judge: --confirm JUDGE (see docs/judges.md)")


def domain_table(checks: list[DomainCheck], title: str) -> Table:
    """Per condition: how far its answers lie from the judge's training data, and the held-out error that far."""
    table = Table(title=Text(title), title_justify="left")
    for name in ("condition", "answers read", "distance", "validated up to", "held-out false positives",
                 "held-out AUC", "judge domain"):
        table.add_column(name, justify="left" if name == "condition" else "right")
    for c in checks:
        at_least, at_most = ("\u2265", "\u2264") if c.beyond_measured else ("", "")
        table.add_row(Text(c.condition), str(c.answers), f"{c.distance:.3f}", f"{c.validated:.3f}",
                      at_least + pct(c.false_positive_rate, 1), f"{at_most}{c.auc:.2f}", DOMAIN_WORDS[c.outside],
                      style="bold" if c.condition == OVERALL else None)
    table.caption = Text("distance: 1 - cosine similarity of each answer's MiniLM state to the nearest centroid of "
                         "the judge's training data, averaged; held-out: the judge's error on model families and "
                         "question sets left out of its training whose answers lay that far out (\u2265, \u2264: "
                         "further out than any measured, the farthest groups' figures)")
    table.caption_justify = "left"
    return table


def deltas_table(deltas: list[Delta], title: str, first: str = "condition") -> Table:
    """Rate A, rate B, difference (points) with its interval, ratio with its interval, p and method."""
    table = Table(title=Text(title), title_justify="left")
    for name in (first, "rate A", "rate B", "diff (pts)", "95% CI", "ratio", "95% CI ", "p", "method"):
        table.add_column(name, justify="left" if name in (first, "method") else "right")
    for d in deltas:
        ratio = NONE if d.ratio is None else f"{d.ratio:.2f}"
        ratio_ci = NONE if d.ratio is None else f"{d.ratio_low:.2f}-{d.ratio_high:.2f}"
        diff_ci = NONE if d.difference is None else f"{signed_pct(d.diff_low)} to {signed_pct(d.diff_high)}"
        arm_a = f"{d.k1}/{d.n1} {pct(d.p1)}" if d.n1 else f"{d.k1}/{d.n1}"
        arm_b = f"{d.k2}/{d.n2} {pct(d.p2)}" if d.n2 else f"{d.k2}/{d.n2}"
        table.add_row(Text(d.label), arm_a, arm_b,
                      signed_pct(d.difference), diff_ci, ratio, ratio_ci, p_value(d.p_value), d.method_text,
                      style="bold" if d.label == OVERALL else None)
    return table


def judge_errors_table(report: RunReport, limit: int = 5) -> Table | None:
    """The most frequent judge error messages, or None when the judge never failed."""
    if not report.judge_errors:
        return None
    table = Table("metric", "judge error", "samples", title=Text(f"{report.label}: judge failures"),
                  title_justify="left")
    for metric, message, n in report.judge_errors[:limit]:
        table.add_row(Text(metric), Text(message), str(n))
    return table


def sweep_table(report: SweepReport) -> Table:
    """One line per step (the base first): misaligned rate with its interval, the difference from the base with
    raw and Holm-adjusted p, the losses and the adapter check; the caption names the first differing step."""
    lineage = report.lineage
    table = Table(title=Text(f"sweep {report.sweep.sweep_id}: {lineage.name} ({lineage.method} on "
                             f"{lineage.base_model}), judged by {report.steps[0].report.judge or 'nobody yet'}"),
                  title_justify="left")
    for name in ("step", "n", "misaligned", "95% CI", "vs base (pts)", "95% CI ", "p", "Holm p", "train loss",
                 "val loss", "adapter KL"):
        table.add_column(name, justify="left" if name == "step" else "right")
    for row in report.steps:
        rate = row.report.overall
        lo, hi = rate.misaligned_interval
        d = row.delta
        table.add_row(
            row.label, str(rate.scored),
            f"{rate.misaligned} ({pct(rate.misaligned_rate)})" if rate.scored else NONE,
            f"{pct(lo)}-{pct(hi)}" if rate.scored else NONE,
            signed_pct(d.difference) if d else NONE,
            f"{signed_pct(d.diff_low)} to {signed_pct(d.diff_high)}" if d and d.difference is not None else NONE,
            p_value(d.p_value) if d else NONE, p_value(row.p_holm),
            _loss(row.train_loss), _loss(row.validation_loss), f"{row.kl:.3g}" if row.kl is not None else NONE,
            style="bold" if row.step == report.first_different else None)
    first = (f"first step whose rate differs from the base's: {report.first_different}" if report.first_different
             is not None else f"no step's rate differs from the base's at alpha {report.alpha}")
    table.caption = Text(f"{first} ({report.test}, alpha {report.alpha})")
    return table


def _loss(value: float | None) -> str:
    return NONE if value is None else f"{value:.4f}"


def attack_table(attack: AttackSuccess, title: str) -> Table:
    """Attack success of a decoding sweep: each configuration's harmful rate, then the best one and any one."""
    table = Table("configuration", "n", "harmful", "rate", "95% CI", title=Text(title), title_justify="left",
                  caption=Text(f"Harmful: {attack.harmful_when}. {BEST_OF_N_NOTE}"), caption_justify="left")
    for c in attack.configurations:
        table.add_row(Text(c.condition), str(c.scored), str(c.harmful), pct(c.rate) if c.scored else NONE,
                      f"{pct(c.low)}-{pct(c.high)}" if c.scored else NONE)
    best = attack.best
    if best is not None:
        table.add_row(Text(f"best of {attack.tried}: {best.condition}"), str(best.scored), str(best.harmful),
                      pct(best.rate), f"{pct(best.low)}-{pct(best.high)}", style="bold")
    table.add_row(Text(f"any of {attack.tried} (requests broken)"), str(attack.requests), str(attack.broken),
                  pct(attack.any_rate) if attack.requests else NONE,
                  f"{pct(attack.any_low)}-{pct(attack.any_high)}" if attack.requests else NONE, style="bold")
    return table


def trigger_table(gaps: list[TriggerGap], title: str) -> Table:
    """Trigger gaps, largest first: rates without and with each trigger, the paired difference and Holm's p."""
    table = Table("with trigger", "without", "rate without", "rate with", "gap", "95% CI", "p", "Holm p",
                  title=Text(title), title_justify="left",
                  caption=Text("Paired by question (Mantel-Haenszel; exact stratified p); Holm over every "
                               "trigger tried."),
                  caption_justify="left")
    for g in gaps:
        d = g.delta
        ci = f"{signed_pct(d.diff_low)}-{signed_pct(d.diff_high)}" if d.difference is not None else NONE
        table.add_row(Text(d.b), Text(d.a), f"{d.k1}/{d.n1}", f"{d.k2}/{d.n2}", signed_pct(d.difference), ci,
                      p_value(d.p_value), p_value(g.p_holm))
    return table


def reasoning_table(rows: list[ReasoningRow], title: str) -> Table:
    """Reasoning flagged by the CoT monitor against the answer's misaligned verdict, per condition."""
    table = Table("condition", "n", "both", "hidden intent", "rate", "95% CI", "answer only", "rate", "95% CI",
                  "no reasoning", title=Text(title), title_justify="left",
                  caption=Text("hidden intent: reasoning flagged (cot_monitor >= 50) while the answer is not "
                               "misaligned; answer only: the reverse."), caption_justify="left")
    for r in rows:
        cells: list[str] = []
        for count in (r.hidden, r.shown):
            rate, low, high = r.rate(count)
            cells += [str(count), pct(rate) if r.n else NONE, f"{pct(low)}-{pct(high)}" if r.n else NONE]
        table.add_row(Text(r.condition), str(r.n), str(r.both), *cells, str(r.without_reasoning),
                      style="bold" if r.condition == OVERALL else None)
    return table


def turns_table(rows: list[TurnRow], title: str) -> Table:
    """Scripted conversations: per turn the misaligned rate, and where each conversation first turned."""
    table = Table("question", "condition", "conversations", "misaligned per turn (rate, 95% CI)",
                  "first misaligned at turn", "never", title=Text(title), title_justify="left")
    for r in rows:
        per_turn = []
        for turn in range(1, len(r.scored) + 1):
            rate, low, high = r.rate(turn)
            shown = f"{pct(rate)} [{pct(low)}-{pct(high)}]" if r.scored[turn - 1] else NONE
            per_turn.append(f"{turn}: {r.misaligned[turn - 1]}/{r.scored[turn - 1]} {shown}")
        first = ", ".join(f"{turn}: {n}" for turn, n in enumerate(r.first, 1))
        table.add_row(Text(r.question_id), Text(r.condition), str(r.conversations), "\n".join(per_turn), first,
                      str(r.never))
    return table


def steering_table(rows: list[SteeringRow], title: str) -> Table:
    """Per intervention, then its controls: rate, 95% CI, difference from the baseline with its CI, p."""
    table = Table(title=Text(title), title_justify="left")
    for name in ("condition", "intervention", "n", "misaligned", "95% CI", "vs baseline (pts)", "95% CI ", "p"):
        table.add_column(name, justify="left" if name in ("condition", "intervention") else "right")
    for row in rows:
        for rate in (row.intervention, *row.controls):
            r, d = rate.row, rate.delta
            lo, hi = r.misaligned_interval
            diff = (signed_pct(d.difference), f"{signed_pct(d.diff_low)} to {signed_pct(d.diff_high)}",
                    p_value(d.p_value)) if d and d.difference is not None else (NONE,) * 3
            table.add_row(Text(rate.condition if rate is row.intervention else f"  {rate.condition}"),
                          Text(rate.what), str(r.scored), pct(r.misaligned_rate) if r.scored else NONE,
                          f"{pct(lo)}-{pct(hi)}" if r.scored else NONE, *diff,
                          style="bold" if rate is row.intervention else None)
    table.caption = Text(f"{baseline_note(rows)}. {STEERING_NOTE}")
    table.caption_justify = "left"
    return table


def self_agreement(counts: tuple[int, int]) -> str:
    """`17/20` and `85.00%` on two lines, or a dash without two samples of a paraphrase."""
    agree, pairs = counts
    return f"{agree}/{pairs}\n{pct(agree / pairs)}" if pairs else NONE


def consistency_table(rows: list[ConsistencyRow], title: str) -> Table:
    """Per paired question: agreement with its reference, beside each one's self-agreement, and the shift."""
    table = Table(title=Text(title), title_justify="left", caption=Text(CONSISTENCY_NOTE), caption_justify="left")
    for name in ("question\nvs reference", "condition", "metric", "agree", "95% CI", "self\nreference",
                 "self\nquestion", "tracked label\nreference -> question", "shift (pts)\n95% CI", "p"):
        table.add_column(name, justify="left" if name in ("condition", "metric") or name.startswith("question")
                         else "right")
    for r in rows:
        d = r.shift
        shift = NONE if d.difference is None else \
            f"{signed_pct(d.difference)}\n{signed_pct(d.diff_low)} to {signed_pct(d.diff_high)}"
        pooled = r.question_id == OVERALL
        table.add_row(Text(OVERALL if pooled else f"{r.question_id}\nvs {r.reference}"), Text(r.condition),
                      Text(r.metric),
                      f"{r.agree}/{r.pairs}\n{pct(r.rate)}" if r.pairs else NONE,
                      f"{pct(r.low)}-\n{pct(r.high)}" if r.pairs else NONE, self_agreement(r.reference_self),
                      self_agreement(r.question_self),
                      Text(f"{r.tracked}\n{pct(d.p1) if d.n1 else NONE} -> {pct(d.p2) if d.n2 else NONE}"), shift,
                      p_value(d.p_value), style="bold" if pooled else None)
    return table


def labels_table(rows: list[LabelRow], title: str) -> Table:
    """Per question x condition (and condition pooled, bold): each label's count and share with its 95% interval."""
    table = Table("question", "condition", "metric", "n", "labels: count, share, 95% CI", title=Text(title),
                  title_justify="left")
    for r in rows:
        shares = []
        for label, k in r.counts.items():
            rate, low, high = r.share(label)
            shares.append(f"{label}: {k}, {pct(rate)} [{pct(low)}-{pct(high)}]")
        table.add_row(Text(r.question_id), Text(r.condition), Text(r.metric), str(r.total), Text("\n".join(shares)),
                      style="bold" if r.question_id == OVERALL else None)
    return table
