"""`emprobe direction RUN [--against RUN2] --layer 16`: a misalignment direction from captured activations, with
every captured layer's held-out separation."""

from pathlib import Path

import typer
from rich.table import Table

from emprobe.analysis import run_thresholds
from emprobe.cli._console import console
from emprobe.cli._diagnose import run_model
from emprobe.cli._evaluate import BACKEND_OPTION, STORE
from emprobe.errors import EmprobeError
from emprobe.rules import ALIGNED_ABOVE
from emprobe.store import ActivationArray, RunRecord, Store


def direction(
    run: str = typer.Argument(..., help="The run whose misaligned answers define the direction."),
    against: str | None = typer.Option(None, help="Take the aligned answers from this run instead (captured under "
                                       "the same model)."),
    layer: int | None = typer.Option(None, help="The layer of the direction (default: the best held-out AUC)."),
    position: str = typer.Option("answer-mean", help="The captured pooling to use."),
    model: str | None = typer.Option(None, help="The model the activations were captured under (default: the "
                                     "run's own)."),
    backend_option: list[str] = BACKEND_OPTION,
    judge: str | None = typer.Option(None, help="Whose scores label the answers (default: the run's first judge)."),
    aligned_above: float = typer.Option(ALIGNED_ABOVE, help="Aligned answers score above this (and are coherent)."),
    operation: str = typer.Option("steer", help="What the direction is for: steer (add) or ablate (project out)."),
    min_answers: int = typer.Option(10, min=2, help="Misaligned and aligned answers needed, each."),
    folds: int = typer.Option(5, min=2, help="Folds of the held-out AUC."),
    seed: int = typer.Option(0, help="Seed of the downsampling and the folds."),
    out: Path | None = typer.Option(None, help="The direction file (default: beside the store)."),
    store: Path = STORE,
) -> None:
    """Difference in means between misaligned and aligned answers (balanced by downsampling), per layer."""
    from emprobe.diagnose import Direction, arrays_dir, fit, save_direction  # torch only when the command runs

    if operation not in ("steer", "ablate"):
        raise EmprobeError(f"--operation {operation!r}: choose steer or ablate")
    with Store(store) as db:
        bad = db.run(run)
        good = db.run(against) if against else bad
        identity = run_model(bad, model, backend_option).identity
        spec = db.resolve_judge(bad, judge)
        if spec is None or (against and db.resolve_judge(good, spec) is None):
            raise EmprobeError(f"run {bad.run_id}: no judge scored it; run `emprobe judge {run} --judge ...` first")
        thresholds = run_thresholds(bad)
        misaligned = _captured(db, bad, identity, position)
        aligned = _captured(db, good, identity, position) if against else misaligned
        ids = (db.verdict_ids(bad.run_id, spec, thresholds, aligned_above)[0],
               db.verdict_ids(good.run_id, spec, thresholds, aligned_above)[1])
        describe = f"run {bad.run_id}" + (f" against {good.run_id}" if against else "") + f" judged by {spec}"
        best, vector, separation, counts = fit(db.path, misaligned, aligned, ids, layer, min_answers, folds, seed,
                                               describe)
        found = Direction(model=identity, width=len(vector), layer=best, hook=misaligned[best].hook, position=position,
                          operation=operation, runs={"misaligned": bad.run_id, "aligned": good.run_id}, judge=spec,
                          thresholds=thresholds, aligned_above=aligned_above, counts=counts, separation=separation,
                          seed=seed, vector=[float(v) for v in vector])
        path = out or arrays_dir(db.path) / "directions" / f"{bad.run_id}-{good.run_id}-layer{best}-{position}.json"
        save_direction(db, found, path)
    table = Table(title=f"separation of held-out answers ({counts['used_each']} misaligned vs {counts['used_each']} "
                        f"aligned, {folds}-fold)")
    for column in ("layer", "held-out AUC", "|direction|"):
        table.add_column(column, justify="right")
    for s in separation:
        table.add_row(f"{s.layer}{' *' if s.layer == best else ''}", f"{s.auc:.3f}", f"{s.norm:.3g}")
    console.print(table)
    console.print(f"direction at layer {best} ({found.hook}, {position}, for {operation}) written to {path}; "
                  f"{counts['misaligned']} misaligned and {counts['aligned']} aligned answers, {counts['used_each']} "
                  "of each used")


def _captured(db: Store, record: RunRecord, identity: str, position: str) -> dict[int, ActivationArray]:
    """The run's captured layers under `identity` at `position`, or one line saying how to capture them."""
    found = {a.layer: a for a in db.activations(record.run_id, identity, position)}
    if not found:
        raise EmprobeError(f"run {record.run_id} has no {position} activations under {identity}; capture them with "
                           f"`emprobe activations {record.run_id} --position {position}` (and --model if not the "
                           "run's own)")
    return found
