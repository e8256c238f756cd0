"""`emprobe activations RUN --layers 8,16`: the residual stream of a local model over a run's stored answers,
pooled per answer and kept as arrays beside the store."""

from pathlib import Path

import typer
from rich.table import Table

from emprobe.cli._console import BarProgress, console, interruptible
from emprobe.cli._diagnose import run_model
from emprobe.cli._evaluate import BACKEND_OPTION, STORE
from emprobe.errors import EmprobeError
from emprobe.model import BackendPool
from emprobe.rules import POSITIONS
from emprobe.store import Store


def activations(
    run: str = typer.Argument(..., help="Run id, id prefix or name."),
    layers: str = typer.Option("all", help="Layers as 8,16 or all; layer N is the residual stream after N decoder "
                               "blocks (the last is before the final norm)."),
    position: str = typer.Option("answer-mean", help=f"How each answer is pooled: {', '.join(POSITIONS)}."),
    model: str | None = typer.Option(None, help="The local model to read (default: the run's own)."),
    backend_option: list[str] = BACKEND_OPTION,
    store: Path = STORE,
) -> None:
    """Capture activations of a run's answers (teacher-forced with the model's chat template) at chosen layers."""
    from emprobe.diagnose import capture_run, decoder_layers, local, parse_layers  # torch only when the command runs

    if position not in POSITIONS:
        raise EmprobeError(f"--position {position!r}: choose {', '.join(POSITIONS)}")
    with Store(store) as db:
        record = db.run(run)
        ref = run_model(record, model, backend_option)
        progress = BarProgress()
        with BackendPool() as pool, interruptible(lambda: "nothing recorded; rerun to capture"):
            backend = local(pool.get(ref), ref.spec)
            chosen = parse_layers(layers, len(decoder_layers(backend.model)[1]))
            progress.start(f"capturing {len(chosen)} layers", db.count_answered(record.run_id))
            try:
                arrays = capture_run(db, record.run_id, backend, chosen, position, progress.advance)
            finally:
                progress.close()
    table = Table(title=f"activations of run {record.run_id} under {ref.identity} ({position})")
    for column in ("layer", "hook", "rows", "width", "file"):
        table.add_column(column)
    for a in arrays:
        table.add_row(str(a.layer), a.hook, str(a.rows), str(a.width), a.path)
    console.print(table)
