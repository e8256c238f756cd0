"""`emprobe conditions list|show`: the condition presets, and exactly what a condition sends for a question."""

import typer
from rich.table import Table

from emprobe.cli._console import DEFAULT_MAX_TOKENS, console, safe
from emprobe.condition import PRESETS, Decoding, resolve_conditions
from emprobe.errors import EmprobeError
from emprobe.suite import load_suite

conditions_app = typer.Typer(help="List condition presets and show what a condition sends.", no_args_is_help=True)


@conditions_app.command("list")
def list_conditions() -> None:
    """The presets `--condition` takes by name (a YAML file of conditions works too)."""
    table = Table("condition", "format", "system prompt", "trigger", "decoding")
    for c in PRESETS.values():
        system = "none (dropped)" if c.drop_system else c.system or "the question's own"
        trigger = f"{c.trigger!r} ({c.trigger_position})" if c.trigger else ""
        table.add_row(c.name, c.format, safe(system), safe(trigger), safe(str(c.decoding.model_dump())))
    console.print(table)


@conditions_app.command("show")
def show(
    condition: str = typer.Argument(..., help="A preset name or a YAML file of conditions."),
    suite: str = typer.Option("core", help="The suite the question comes from."),
    question: str | None = typer.Option(None, help="Question id (default: the suite's first)."),
    paraphrase: int = typer.Option(0, min=0, help="Which paraphrase of the question."),
) -> None:
    """The exact messages and decoding a condition sends for one question."""
    chosen = load_suite(suite)
    q = chosen.questions[0] if question is None else next((q for q in chosen.questions if q.id == question), None)
    if q is None:
        raise EmprobeError(f"suite {chosen.name!r} has no question {question!r}")
    if paraphrase >= len(q.paraphrases):
        raise EmprobeError(f"question {q.id!r} has {len(q.paraphrases)} paraphrases; --paraphrase counts from 0")
    for c in resolve_conditions([condition], Decoding(max_tokens=DEFAULT_MAX_TOKENS)):
        console.print(safe(f"condition {c.name} · question {q.id} · paraphrase {paraphrase}"), style="bold")
        for message in c.messages(q, q.paraphrases[paraphrase]):
            console.print(safe(f"[{message.role}]"), style="cyan")
            console.print(safe(message.content))
        console.print(safe(f"decoding: {c.decoding.model_dump()}"), style="dim")
