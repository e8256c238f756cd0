"""`emprobe report RUN [RUN...] -o report.html`: terminal tables and one self-contained HTML file; `emprobe report
NAME` for a training run (or a sweep id) reports its checkpoint sweep."""

from pathlib import Path

import typer
from rich.text import Text

from emprobe.analysis import COMPLIANCE_NOTE, condition_deltas, pairing_note, run_deltas, trigger_gaps
from emprobe.cli._console import DEFAULT_STORE, console, err_console
from emprobe.report import (
    attack_table,
    cascade_table,
    consistency_table,
    deltas_table,
    domain_table,
    judge_errors_table,
    labels_table,
    rates_table,
    reasoning_table,
    steering_table,
    sweep_table,
    trigger_table,
    turns_table,
    write_report,
    write_sweep_report,
)
from emprobe.rules import OVERALL


def report(
    runs: list[str] = typer.Argument(..., help="Run ids, prefixes or names; later runs are compared with the first. "
                                     "One training run's name (or sweep id): its checkpoint sweep."),
    output: Path = typer.Option(Path("report.html"), "-o", "--output", help="The HTML file to write."),
    store: Path = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file."),
    judge: str | None = typer.Option(None, help="Judge whose scores to show (default: each run's first)."),
    samples_per_cell: int = typer.Option(50, min=0, help="Samples embedded per question x condition, most "
                                         "misaligned first; 0 embeds every sample."),
    baseline: str | None = typer.Option(None, help="Condition the others are compared with (default: the first)."),
    validation: str | None = typer.Option(None, help="Validation id whose error corrects the rates (see `emprobe "
                                          "judge validations`), or `none`; default: the newest usable one."),
) -> None:
    """Write an offline HTML report (rates, comparisons, samples, provenance) and print its tables."""
    sweep = write_sweep_report(store, runs[0], output, judge, samples_per_cell) if len(runs) == 1 else None
    if sweep is not None:
        console.print(sweep_table(sweep))
        console.print(Text(f"wrote {output}"))
        return
    reports = write_report(store, runs, output, judge=judge, per_cell=samples_per_cell, baseline=baseline,
                           validation=validation)
    for r in reports:
        console.print(rates_table(r))
        pooled = [row for row in r.labels if row.question_id == OVERALL]
        if pooled:
            console.print(labels_table(pooled, f"{r.label}: labels, judged by {r.judge} (per question: the HTML)"))
        if r.steering:
            console.print(steering_table(r.steering, f"{r.label}: steering and ablation against controls, judged by "
                                                     f"{r.judge}"))
        if r.domain:
            console.print(domain_table(r.domain, f"{r.label}: answers against the built-in judge's training data"))
        if r.cascade is not None:
            console.print(cascade_table(r.cascade))
        deltas = condition_deltas(r, baseline)
        if deltas:
            console.print(deltas_table(deltas, f"{r.label}: conditions compared", first="comparison"))
        if r.attack is not None:
            console.print(attack_table(r.attack, f"{r.label}: attack success, judged by {r.judge}"))
        if r.turns:
            console.print(turns_table(r.turns, f"{r.label}: scripted conversations, judged by {r.judge}"))
        if r.reasoning:
            console.print(reasoning_table(r.reasoning, f"{r.label}: reasoning against answer, judged by {r.judge}"))
        if r.consistency:
            console.print(consistency_table(r.consistency, f"{r.label}: paired questions, judged by {r.judge}"))
        if r.compliance:
            console.print(deltas_table([g.delta for g in r.compliance], f"{r.label}: compliance gap"))
            console.print(Text(COMPLIANCE_NOTE), style="dim")
        gaps = trigger_gaps(r)
        if gaps:
            console.print(trigger_table(gaps, f"{r.label}: trigger gaps, judged by {r.judge}"))
        errors = judge_errors_table(r)
        if errors is not None:
            console.print(errors)
    for other in reports[1:]:
        deltas = run_deltas(reports[0], other)
        console.print(deltas_table(deltas, f"{other.label} (B) vs {reports[0].label} (A)"))
        note = pairing_note(deltas)
        if note:
            err_console.print(Text(f"warning: {note}"), style="yellow")
    console.print(Text(f"wrote {output}"))
