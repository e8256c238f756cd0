"""`emprobe suites list|show`: the built-in suites and what is in a suite file."""

import typer
from rich.table import Table

from emprobe.cli._console import console, safe
from emprobe.judge import rubrics_for
from emprobe.suite import asked_format, builtin_suites, load_suite

suites_app = typer.Typer(help="List and show question suites.", no_args_is_help=True)


@suites_app.command("list")
def list_suites() -> None:
    """The suites that ship with emprobe (any YAML path works wherever a suite is asked for)."""
    table = Table("suite", "questions", "paraphrases", "description")
    for name, path in sorted(builtin_suites().items()):
        s = load_suite(path)
        table.add_row(name, str(len(s.questions)), str(sum(len(q.paraphrases) for q in s.questions)),
                      safe(s.description))
    console.print(table)


@suites_app.command("show")
def show(name: str = typer.Argument(..., help="Suite name or YAML path.")) -> None:
    """Every question of a suite with its paraphrases, samples and rubrics."""
    s = load_suite(name)
    console.print(safe(f"{s.name}: {len(s.questions)} questions  ({s.source})"), style="bold")
    for q in s.questions:
        rubrics = ", ".join(r.name for r in rubrics_for(q))
        meta = f"samples/paraphrase {q.samples_per_paraphrase}; rubrics {rubrics}"
        if q.tags:
            meta += f"; tags {', '.join(q.tags)}"
        if q.pairs_with:
            meta += f"; pairs with {q.pairs_with}"
        if q.turns:
            meta += f"; a conversation of {len(q.turns) + 1} turns"
        if asked_format(q) != "free":
            meta += f"; asks for {asked_format(q)} in its own text (under every condition)"
        console.print(safe(f"\n{q.id}"), safe(f"  {meta}"), style="cyan")
        if q.system:
            console.print(safe(f"  system: {q.system}"), style="magenta")
        for p in q.paraphrases:
            console.print(safe(f"  - {p}"))
