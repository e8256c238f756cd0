"""A checkpoint sweep analysed: the misaligned rate at each training step with its 95% interval, every checkpoint
compared with the base, and the first step whose rate differs from the base's.

Each checkpoint is compared with the base on all conditions pooled, paired by question x condition cell (the
`(all)` row of `run_deltas`: Mantel-Haenszel difference, exact stratified p; Fisher's exact p when fewer than two
cells are shared). The p-values of all checkpoints are adjusted with Holm's step-down method, so the chance that
any checkpoint is marked although none differs stays at most alpha; the mark goes on the earliest step whose
adjusted p is below alpha.
"""

from collections.abc import Sequence

from pydantic import BaseModel

from emprobe.analysis._compare import Delta
from emprobe.analysis._report import RunReport, load_run, run_deltas
from emprobe.errors import EmprobeError
from emprobe.rules import OVERALL
from emprobe.stats import holm
from emprobe.store import Store, SweepRecord
from emprobe.train import TrainLineage

ALPHA = 0.05
TEST = ("each checkpoint vs the base, all conditions pooled, paired by question x condition (exact stratified p); "
        "Holm's adjustment over the checkpoints")


def step_label(step: int) -> str:
    """How a sweep's arm is called: `base` (step 0) or `step N`."""
    return "base" if step == 0 else f"step {step}"


class StepRow(BaseModel):
    """One arm of a sweep: the base (step 0) or a checkpoint, with its run's numbers and its test against the base."""

    step: int
    model: str
    report: RunReport
    kl: float | None = None
    """The largest next-token KL of the adapter-applies check (None for the base)."""
    train_loss: float | None = None
    validation_loss: float | None = None
    delta: Delta | None = None
    """This checkpoint vs the base (None for the base)."""
    p_holm: float | None = None

    @property
    def label(self) -> str:
        return step_label(self.step)


class SweepReport(BaseModel):
    """A sweep's arms by step (the base first), the training run's lineage, and the first differing step."""

    sweep: SweepRecord
    lineage: TrainLineage
    steps: list[StepRow]
    alpha: float
    first_different: int | None
    """The earliest checkpoint step whose Holm-adjusted p is below alpha; None when there is none."""
    test: str = TEST

    @property
    def reports(self) -> list[RunReport]:
        return [s.report for s in self.steps]


def first_different(steps: Sequence[int], p_values: Sequence[float | None],
                    alpha: float = ALPHA) -> tuple[list[float | None], int | None]:
    """Holm-adjusted p per step (None where there was no test) and the earliest step whose adjusted p < alpha."""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    for i, p in zip(tested, holm([p for p in p_values if p is not None]), strict=True):
        adjusted[i] = p
    hits = [steps[i] for i, p in enumerate(adjusted) if p is not None and p < alpha]
    return adjusted, min(hits) if hits else None


def load_sweep(db: Store, ref: str, judge: str | None = None, alpha: float = ALPHA) -> SweepReport | None:
    """The sweep `ref` names (a sweep id, or a training run's latest sweep); None when it names neither."""
    sweep = db.sweep(ref)
    if sweep is None:
        if db.training(ref) is not None:
            raise EmprobeError(f"training run {ref!r} has no sweep in {db.path}: run `emprobe sweep train:{ref}` "
                               "first")
        return None
    training = db.training(sweep.training)
    assert training is not None, "a sweep's training run is stored with it (foreign key)"
    records = {c.step: c for c in training.lineage.checkpoints}
    rows = []
    for arm in sweep.arms:
        record = records.get(arm.step)
        rows.append(StepRow(step=arm.step, model=arm.model, kl=arm.kl,
                            report=load_run(db, arm.run_id, judge, title=step_label(arm.step)),
                            train_loss=record.train_loss if record else None,
                            validation_loss=record.validation_loss if record else None))
    base = rows[0].report
    for row in rows[1:]:
        row.delta = next(d for d in run_deltas(base, row.report) if d.label == OVERALL)
    adjusted, first = first_different([r.step for r in rows[1:]],
                                      [r.delta.p_value if r.delta else None for r in rows[1:]], alpha)
    for row, p in zip(rows[1:], adjusted, strict=True):
        row.p_holm = p
    return SweepReport(sweep=sweep, lineage=training.lineage, steps=rows, alpha=alpha, first_different=first)
