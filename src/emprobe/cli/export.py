"""`emprobe export RUN --format jsonl|csv|parquet|eval`: one row per sample with its scores."""

from pathlib import Path

import typer
from rich.text import Text

from emprobe.cli._console import DEFAULT_STORE, console
from emprobe.export import FORMATS, export_run


def export(
    run: str = typer.Argument(..., help="Run id, id prefix or name."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help=f"One of {', '.join(FORMATS)} (eval: Inspect AI log)."),
    output: Path | None = typer.Option(None, "-o", "--output", help="Output file (default: RUN_ID.FORMAT)."),
    store: Path = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file."),
    judge: str | None = typer.Option(None, help="Judge whose scores to export (default: the run's first)."),
) -> None:
    """Export a run's samples with their condition fields, answers, judge scores and misaligned flag."""
    path, n = export_run(store, run, fmt, output, judge)  # type: ignore[arg-type]  # checked in export_run
    console.print(Text(f"wrote {n} samples to {path}"))
