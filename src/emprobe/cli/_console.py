"""Shared terminal output: the console, progress bars and untrusted text made safe for a terminal."""

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

# Tables are wide; when output is piped (no terminal to measure), do not squeeze them into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

DEFAULT_STORE = "emprobe-runs/emprobe.db"
DEFAULT_MAX_TOKENS = 200
"""`emprobe run`'s answer length unless --max-tokens says otherwise."""


def safe(text: str) -> Text:
    """Untrusted text for the terminal: line breaks kept, every other control character (escape sequences, bells,
    carriage returns) written as an escape."""
    return Text("".join(ch if ch.isprintable() or ch in "\n" else ch.encode("unicode_escape").decode()
                        for ch in text))


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
        self.task: TaskID | None = None

    def start(self, stage: str, total: int) -> None:
        if self.task is None:
            self.bars.start()
        self.task = self.bars.add_task(stage, total=total, status="")

    def advance(self, n: int = 1, status: str = "") -> None:
        if self.task is not None:
            self.bars.update(self.task, advance=n, status=status)

    def done(self) -> None:
        self.bars.refresh()

    def note(self, message: str) -> None:
        """A line above the bars (they keep going below it)."""
        self.bars.console.print(Text(message, style="yellow"))

    def close(self) -> None:
        if self.task is not None:
            self.bars.stop()


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt so that cleanup runs the same way."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Terminated` (the default would end the process without storing what is done)."""
    signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def interruptible(summary: Callable[[], str]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, once the block has cleaned up (stored what was done): print `interrupted: ...` and
    exit 130 (SIGINT) or 143 (SIGTERM)."""
    try:
        yield
    except (KeyboardInterrupt, Terminated) as stop:
        err_console.print(Text(f"interrupted: {summary()}"))
        raise typer.Exit(130 if isinstance(stop, KeyboardInterrupt) else 143) from None
