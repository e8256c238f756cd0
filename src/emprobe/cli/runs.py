"""`emprobe runs list|show`: the evaluation and training runs in a store, and one run's provenance and summary
(a training run's lineage)."""

import json
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from emprobe.analysis import run_thresholds, summarize
from emprobe.cli._console import DEFAULT_STORE, console, shown
from emprobe.cli._lineage import print_training
from emprobe.report import summary_table
from emprobe.rules import PRIMARY_METRICS
from emprobe.store import RunRecord, Store

runs_app = typer.Typer(help="List and inspect stored runs.", no_args_is_help=True)
STORE = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file.")


def _open(store: Path) -> Store:
    return Store(store, read_only=True)


@runs_app.command("list")
def list_runs(store: Path = STORE) -> None:
    """Every evaluation run with its sample counts, then every training run with its checkpoints."""
    db = _open(store)
    table = Table("run", "name", "model", "updated", "planned", "generated", "failed", title="evaluation runs",
                  title_justify="left")
    for r in db.runs():
        c = db.count(r.run_id)
        table.add_row(r.run_id, Text(r.name or ""), Text(r.model), r.updated, str(c["planned"]),
                      str(c["generated"]), str(c["failed"]))
    console.print(table)
    trainings = db.trainings()
    if not trainings:
        return
    table = Table("training run", "base model", "method", "status", "steps", "checkpoints", "val loss (last)",
                  "sweeps", "updated", "output", title="training runs", title_justify="left")
    for t in trainings:
        lineage, last = t.lineage, t.lineage.checkpoints[-1] if t.lineage.checkpoints else None
        val = last.validation_loss if last is not None else None
        table.add_row(Text(t.name), Text(lineage.base_model), lineage.method, lineage.status,
                      f"{last.step if last else 0}/{lineage.max_steps}", str(len(lineage.checkpoints)),
                      f"{val:.4f}" if val is not None else "\u2014", str(len(db.sweeps(t.name))), t.updated,
                      Text(lineage.output))
    console.print(table)


@runs_app.command("show")
def show(run: str = typer.Argument(..., help="Run id, id prefix or name, or a training run's name."),
         store: Path = STORE,
         as_json: bool = typer.Option(False, "--json", help="Print the stored config (a training run's lineage) as "
                                      "JSON."),
         samples: bool = typer.Option(False, "--samples", help="Print the answers instead of the summary."),
         misaligned: bool = typer.Option(False, "--misaligned", help="With --samples: only misaligned answers."),
         judge: str | None = typer.Option(None, help="With --samples: whose scores (default: the run's first)."),
         limit: int = typer.Option(20, min=0, help="With --samples: at most this many answers (0: all).")) -> None:
    """A run's provenance (model, versions, numerics, settings) and its summary per judge, or its answers; for a
    training run, its lineage: base, data, mix, settings, versions, losses, checkpoints and sweeps."""
    db = _open(store)
    training = db.training(run)
    if training is not None:
        print_training(db, training, as_json)
        return
    r = db.run(run)
    if samples or misaligned:
        _print_samples(db, r, judge, misaligned, limit)
        return
    if as_json:
        console.print_json(json.dumps({"run_id": r.run_id, "config": r.config, "versions": r.versions,
                                       "info": r.info}))
        return
    c = db.count(r.run_id)
    names = f"  names {', '.join(r.names)}" if r.names else ""
    console.print(Text(f"run {r.run_id}{names}  model {r.model}  created {r.created}  updated {r.updated}",
                       style="bold"))
    console.print(Text(f"samples: {c['planned']} planned, {c['generated']} generated, {c['failed']} failed"))
    console.print(Text("backend: " + ", ".join(f"{k}={v}" for k, v in r.info.items())))
    numerics = [f"{k} {r.info[k]}" for k in ("device", "dtype", "threads") if k in r.info]
    numerics += [f"{k} {r.versions[k]}" for k in ("torch", "transformers") if k in r.versions]
    if numerics:
        console.print(Text("numerics (what the answers' exact text depends on): " + ", ".join(numerics)))
    console.print(Text("versions: " + ", ".join(f"{k} {v}" for k, v in r.versions.items())))
    thresholds = run_thresholds(r)
    for judge in db.judges(r.run_id):
        console.print(summary_table(summarize(db, r.run_id, judge, thresholds).rows(), f"judged by {judge}"))


def _print_samples(db: Store, run: RunRecord, judge: str | None, misaligned: bool, limit: int) -> None:
    """One line per answer, most recent sample ids in id order; every model text escaped."""
    judge = db.resolve_judge(run, judge)
    thresholds = run_thresholds(run)
    title = Text(f"{run.name or run.run_id}: answers judged by {judge or 'nobody yet'}")
    table = Table("sample", "condition", "question", "answer", *PRIMARY_METRICS, "label", title=title,
                  title_justify="left")
    shown_rows = 0
    for row in db.samples(run.run_id, judge):
        if misaligned and not row.misaligned(thresholds):
            continue
        scores = [row.scores.get(m) for m in PRIMARY_METRICS]
        cells = ["\u2014" if s is None or s.score is None else f"{s.score:.0f}" for s in scores]
        label = ", ".join(sorted({s.label for s in row.scores.values() if s.label}))
        answer = row.answer if row.answer is not None else f"(failed: {row.generation_error})"
        table.add_row(row.sample_id[:8], Text(row.condition), Text(row.question_id), shown(answer, 300), *cells,
                      Text(label))
        shown_rows += 1
        if limit and shown_rows >= limit:
            break
    console.print(table)
