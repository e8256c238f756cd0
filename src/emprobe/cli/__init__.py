"""The `emprobe` command line; each command lives in its own module."""

import sys

import typer

from emprobe.cli._console import stop_on_sigterm
from emprobe.cli.compare import compare
from emprobe.cli.export import export
from emprobe.cli.judge import judge_app
from emprobe.cli.plan import plan
from emprobe.cli.report import report
from emprobe.cli.run import run
from emprobe.cli.runs import runs_app
from emprobe.cli.suites import suites_app
from emprobe.errors import EmprobeError

app = typer.Typer(help="Measure how often a language model gives misaligned answers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command("run")(run)
app.command("plan")(plan)
app.command("report")(report)
app.command("compare")(compare)
app.command("export")(export)
app.add_typer(judge_app, name="judge")
app.add_typer(suites_app, name="suites")
app.add_typer(runs_app, name="runs")


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    stop_on_sigterm()
    try:
        app()
    except EmprobeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
