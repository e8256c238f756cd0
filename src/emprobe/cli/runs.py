"""`emprobe runs list|show`: the runs in a store, and one run's provenance and summary."""

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from emprobe.analysis import run_thresholds, summarize
from emprobe.cli._console import DEFAULT_STORE, console
from emprobe.report import summary_table
from emprobe.store import Store

runs_app = typer.Typer(help="List and inspect stored runs.", no_args_is_help=True)
STORE = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file.")


def _open(store: Path) -> Store:
    return Store(store, read_only=True)


@runs_app.command("list")
def list_runs(store: Path = STORE) -> None:
    """Every run in the store with its sample counts."""
    db = _open(store)
    table = Table("run", "name", "model", "updated", "planned", "generated", "failed")
    for r in db.runs():
        c = db.count(r.run_id)
        table.add_row(r.run_id, Text(r.name or ""), Text(r.model), r.updated, str(c["planned"]),
                      str(c["generated"]), str(c["failed"]))
    console.print(table)


@runs_app.command("show")
def show(run: str = typer.Argument(..., help="Run id, id prefix or name."), store: Path = STORE,
         as_json: bool = typer.Option(False, "--json", help="Print the stored config as JSON.")) -> None:
    """A run's provenance (model, versions, settings) and its summary per judge."""
    db = _open(store)
    r = db.run(run)
    if as_json:
        console.print_json(json.dumps({"run_id": r.run_id, "config": r.config, "versions": r.versions,
                                       "info": r.info}))
        return
    c = db.count(r.run_id)
    console.print(Text(f"run {r.run_id}  model {r.model}  created {r.created}  updated {r.updated}", style="bold"))
    console.print(Text(f"samples: {c['planned']} planned, {c['generated']} generated, {c['failed']} failed"))
    console.print(Text("backend: " + ", ".join(f"{k}={v}" for k, v in r.info.items())))
    console.print(Text("versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items())))
    thresholds = run_thresholds(r)
    for judge in db.judges(r.run_id):
        console.print(summary_table(summarize(db, r.run_id, judge, thresholds).rows(), f"judged by {judge}"))
