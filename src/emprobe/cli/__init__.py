"""The `emprobe` command line; each command lives in its own module."""

import logging
import sqlite3
import sys

import typer
from pydantic import ValidationError
from typer.exceptions import TyperException

from emprobe.cli._console import stop_on_sigterm
from emprobe.cli.activations import activations
from emprobe.cli.compare import compare
from emprobe.cli.conditions import conditions_app
from emprobe.cli.direction import direction
from emprobe.cli.diverge import diverge
from emprobe.cli.export import export
from emprobe.cli.judge import judge_app
from emprobe.cli.pairs import pairs
from emprobe.cli.plan import plan
from emprobe.cli.report import report
from emprobe.cli.run import run
from emprobe.cli.runs import runs_app
from emprobe.cli.suites import suites_app
from emprobe.cli.sweep import sweep
from emprobe.cli.train import train
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.store import Store

app = typer.Typer(help="Measure how often a language model gives misaligned answers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command("run")(run)
app.command("plan")(plan)
app.command("report")(report)
app.command("compare")(compare)
app.command("export")(export)
app.command("train")(train)
app.command("sweep")(sweep)
app.command("activations")(activations)
app.command("direction")(direction)
app.command("diverge")(diverge)
app.command("pairs")(pairs)
app.add_typer(judge_app, name="judge")
app.add_typer(suites_app, name="suites")
app.add_typer(conditions_app, name="conditions")
app.add_typer(runs_app, name="runs")


def main() -> None:
    """Entry point: user errors, a damaged or full store and files that cannot be written become one line on
    stderr and exit status 2."""
    stop_on_sigterm()
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s", stream=sys.stderr)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C outside a run (a run says what it stored and exits 130 itself)
        sys.exit(130)
    except TyperException as err:  # a bad option: one line naming it, instead of a framed usage text
        explain = getattr(err, "format_message", None)
        message = explain() if callable(explain) else str(err)
        if message:  # (asking for a group's help prints it and has nothing to add)
            _fail(message)
        sys.exit(getattr(err, "exit_code", 2))
    except EmprobeError as err:
        _fail(str(err))
    except ValidationError as err:
        _fail(first_validation_error(err))
    except sqlite3.DatabaseError as err:
        _fail(f"{Store.last_opened or 'the store'}: {err} (nothing stored before this was lost)")
    except OSError as err:
        _fail(f"{err.filename or 'a file'}: {err.strerror or err}" if err.filename else str(err))


    sys.exit(code or 0)


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
