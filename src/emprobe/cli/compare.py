"""`emprobe compare RUN_A RUN_B`: misaligned rates of two runs per condition and overall, with tests."""

from pathlib import Path

import typer
from rich.text import Text

from emprobe.analysis import load_run, pairing_note, run_deltas
from emprobe.cli._console import DEFAULT_STORE, console, err_console
from emprobe.report import deltas_table
from emprobe.store import Store

COMPARISON_NOTE = ("paired: Mantel-Haenszel difference over shared questions, design-effect CI, exact stratified p; "
                   "independent: Newcombe CI, Fisher exact p; ratio: Katz CI.")


def compare(
    run_a: str = typer.Argument(..., help="Run A (the reference): id, id prefix or name."),
    run_b: str = typer.Argument(..., help="Run B: id, id prefix or name."),
    store: Path = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file."),
    judge: str | None = typer.Option(None, help="Judge whose scores to compare (default: each run's first)."),
) -> None:
    """Rate A, rate B, difference B - A (Newcombe CI), ratio (Katz CI) and exact p, paired by question."""
    with Store(store, read_only=True) as db:
        a, b = load_run(db, run_a, judge), load_run(db, run_b, judge)
    deltas = run_deltas(a, b)
    console.print(deltas_table(deltas, f"B = {b.label} ({b.run.run_id}) vs A = {a.label} ({a.run.run_id}), "
                                       f"judged by {a.judge} / {b.judge}"))
    note = pairing_note(deltas)
    if note:
        err_console.print(Text(f"warning: {note}"), style="yellow")
    console.print(COMPARISON_NOTE, style="dim")
