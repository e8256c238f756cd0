"""Shared terminal output: the console, progress bars and the summary table."""

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from emprobe.summary import OVERALL, SummaryRow

# Tables are wide; when output is piped (no terminal to measure), do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DEFAULT_STORE = "emprobe-runs/emprobe.db"


def shown(text: str, limit: int) -> Text:
    """Untrusted text for a terminal cell: one line, control characters written as escapes, cut to `limit`."""
    flat = "".join(ch if ch.isprintable() else "\u23ce" if ch == "\n" else ch.encode("unicode_escape").decode()
                   for ch in text)
    return Text(flat if len(flat) <= limit else flat[: limit - 1] + "\u2026")


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.completed / task.elapsed if task.elapsed else None
        return Text("-- samples/s" if speed is None else f"{speed:.1f} samples/s", style="cyan")


class BarProgress:
    """Rich progress bars with samples/s and ETA, one per stage, on stderr."""

    def __init__(self):
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             TextColumn("{task.fields[status]}", style="yellow"),
                             console=err_console, transient=False)
        self.task = None

    def start(self, stage: str, total: int) -> None:
        if self.task is None:
            self.bars.start()
        self.task = self.bars.add_task(stage, total=total, status="")

    def advance(self, n: int = 1, status: str = "") -> None:
        self.bars.update(self.task, advance=n, status=status)

    def done(self) -> None:
        self.bars.refresh()

    def close(self) -> None:
        if self.task is not None:
            self.bars.stop()


def summary_table(rows: list[SummaryRow], title: str) -> Table:
    """One line per question x condition, then the pooled line of each condition."""
    table = Table(title=title, title_justify="left")
    table.add_column("question")
    table.add_column("condition")
    for name in ("n", "misaligned", "95% CI", "incl. named", "coherent", "refusal", "named", "judge fail",
                 "gen fail"):
        table.add_column(name, justify="right")
    for r in rows:
        lo, hi = r.misaligned_interval
        style = "bold" if r.question_id == OVERALL else None
        table.add_row(
            Text(r.question_id), Text(r.condition), str(r.scored), f"{r.misaligned_rate:.1%}",
            f"{lo:.1%}-{hi:.1%}", f"{r.misaligned_rate_with_named:.1%}", f"{r.coherent_rate:.1%}",
            f"{r.refusal_rate:.1%}", str(r.labelled), str(r.judge_failures),
            str(r.generation_failures), style=style,
        )
    return table
