"""`emprobe diverge RUN --model A --reference-model B`: where two models disagree on a run's stored answers, token by
token (KL and log-prob gap, teacher-forced), and how much more on misaligned answers than on aligned ones."""

from pathlib import Path

import typer
from rich.table import Table

from emprobe.analysis import by_group, run_thresholds, verdict_groups
from emprobe.cli._console import BarProgress, console, shown
from emprobe.cli._diagnose import run_model
from emprobe.cli._evaluate import BACKEND_OPTION, STORE
from emprobe.model import BackendPool, parse_options, resolve
from emprobe.store import Store


def diverge(
    run: str = typer.Argument(..., help="Run id, id prefix or name."),
    model: str | None = typer.Option(None, help="Model A, e.g. the fine-tuned one (default: the run's own)."),
    reference_model: str = typer.Option(..., help="Model B, e.g. A's base; it must share A's tokenizer."),
    backend_option: list[str] = BACKEND_OPTION,
    judge: str | None = typer.Option(None, help="Whose scores split misaligned from aligned answers."),
    top: int = typer.Option(10, min=0, help="How many answers and tokens to show."),
    store: Path = STORE,
) -> None:
    """Per-token KL(A || B) and log-prob gap on every answer of a run; both models see A's chat template."""
    from emprobe.diagnose import diverge_run, local, top_tokens  # torch only when the command runs

    with Store(store) as db:
        record = db.run(run)
        ref_a = run_model(record, model, backend_option)
        ref_b = resolve(reference_model, options=parse_options(backend_option))
        spec = db.resolve_judge(record, judge)
        progress = BarProgress()
        with BackendPool() as pool:
            a, b = local(pool.get(ref_a), ref_a.spec), local(pool.get(ref_b), ref_b.spec)
            progress.start("teacher-forcing answers through both models", db.count_answered(record.run_id))
            try:
                rows = diverge_run(db, record.run_id, a, b, max(1, a.sequence_rows // 8), progress.advance)
            finally:
                progress.close()
        groups = verdict_groups(db, record.run_id, spec, run_thresholds(record), rows)
        answers = {s.sample_id: s.answer for chunk in db.answered(record.run_id) for s in chunk}
    table = Table(title=f"mean per-token KL(A || B), A = {ref_a.identity}, B = {ref_b.identity}"
                        + (f", judged by {spec}" if spec else ""))
    for column in ("answers", "n", "mean KL", "s.e."):
        table.add_column(column, justify="left" if column == "answers" else "right")
    for g in by_group(rows, groups):
        table.add_row(g.group, str(g.answers), f"{g.mean_kl:.4g}", f"{g.stderr:.2g}")
    console.print(table)
    worst = Table(title=f"answers where A and B diverge most (top {top})")
    for column in ("sample", "tokens", "mean KL", "answer"):
        worst.add_column(column)
    for d in sorted(rows, key=lambda d: -d.mean_kl)[:top]:
        worst.add_row(d.sample_id, str(len(d.kl)), f"{d.mean_kl:.4g}", shown(answers.get(d.sample_id, ""), 60))
    console.print(worst)
    tokens = Table(title=f"tokens where A and B diverge most (top {top})")
    for column in ("sample", "token", "KL", "logp A - logp B", "context"):
        tokens.add_column(column)
    for d, i in top_tokens(rows, top):
        context = "".join(d.tokens[max(0, i - 6) : i]) + "[" + d.tokens[i] + "]" + "".join(d.tokens[i + 1 : i + 4])
        tokens.add_row(d.sample_id, shown(d.tokens[i], 20), f"{d.kl[i]:.4g}", f"{d.gap[i]:+.3f}", shown(context, 60))
    console.print(tokens)
