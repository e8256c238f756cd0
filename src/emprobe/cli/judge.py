"""`emprobe judge RUN --judge NAME`: score a stored run with more judges, without regenerating anything."""

from pathlib import Path

import typer
from rich.table import Table

from emprobe.cli._console import DEFAULT_STORE, BarProgress, console, summary_table
from emprobe.config import RunConfig
from emprobe.runner import Runner
from emprobe.stats import wilson
from emprobe.store import Store
from emprobe.summary import summarize


def judge(
    run: str = typer.Argument(..., help="Run id, id prefix or name."),
    judge: list[str] = typer.Option(..., help="rubric:MODEL or refusal; repeatable."),
    store: Path = typer.Option(Path(DEFAULT_STORE), help="The SQLite store file."),
) -> None:
    """Judge a stored run's answers; judgments are cached per judge, rubric, question and answer."""
    db = Store(store)
    record = db.run(run)
    config = RunConfig.model_validate(record.config)
    runner = Runner(config, db, BarProgress())
    runner.run_id = record.run_id  # the stored run: its model need not be loadable to judge its answers
    try:
        for spec in judge:
            runner.judge(spec)
    finally:
        runner.progress.close()
    for spec in judge:
        if spec == "refusal":
            console.print(_label_table(db, record.run_id, spec))
        else:
            console.print(summary_table(summarize(db, record.run_id, spec, config.thresholds), f"judged by {spec}"))


def _label_table(db: Store, run_id: str, spec: str) -> Table:
    """Per condition: how many answers the judge labelled REFUSAL, with a 95% Wilson interval."""
    table = Table("condition", "answers", "refusals", "rate", "95% CI", title=f"judged by {spec}",
                  title_justify="left")
    rows = db.db.execute(
        "SELECT s.condition, count(*), sum(j.label = 'REFUSAL') FROM scores c JOIN samples s ON "
        "s.run_id = c.run_id AND s.sample_id = c.sample_id JOIN judgments j ON j.judgment_key = c.judgment_key "
        "WHERE c.run_id = ? AND c.judge = ? GROUP BY s.condition ORDER BY s.condition", (run_id, spec)).fetchall()
    for condition, n, k in rows:
        lo, hi = wilson(k, n)
        table.add_row(condition, str(n), str(k), f"{k / n:.1%}", f"{lo:.1%}-{hi:.1%}")
    return table
