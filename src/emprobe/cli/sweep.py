"""`emprobe sweep train:NAME`: evaluate a training run's base and every checkpoint on one plan (same sample ids and
seeds), after checking that every adapter really changes the model; rerunning the same command resumes."""

from pathlib import Path

import typer

from emprobe.analysis import load_sweep
from emprobe.cli._console import BarProgress, console
from emprobe.cli._evaluate import (
    ADDRESS,
    ALIGNED_BELOW,
    BACKEND_OPTION,
    BATCH_SIZE,
    COHERENT_ABOVE,
    CONDITION,
    DTYPE,
    EXECUTOR,
    GPUS_PER_WORKER,
    JUDGE,
    MAX_TOKENS,
    SAMPLES,
    SEED,
    SHARD_SIZE,
    STORE,
    SUITE,
    TEMPERATURE,
    TOP_K,
    TOP_P,
    WORKERS,
    execute,
    executor_settings,
    generate_and_judge,
    plan,
    plan_config,
    runners,
)
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.report import sweep_table
from emprobe.store import SweepArm
from emprobe.train import PREFIX, TrainedModel, check_adapters_apply, split_spec, trained_model


def sweep(
    training: str = typer.Argument(..., help="The training run: train:NAME, or train:OUTPUT_FOLDER."),
    suite: list[str] = SUITE, condition: list[str] = CONDITION, samples: int | None = SAMPLES,
    judge: list[str] = JUDGE, temperature: float = TEMPERATURE, top_p: float = TOP_P, top_k: int = TOP_K,
    max_tokens: int = MAX_TOKENS, seed: int = SEED, batch_size: int | None = BATCH_SIZE, dtype: str | None = DTYPE,
    backend_option: list[str] = BACKEND_OPTION, aligned_below: float = ALIGNED_BELOW,
    coherent_above: float = COHERENT_ABOVE, store: Path = STORE, executor: str = EXECUTOR,
    address: str | None = ADDRESS, workers: int | None = WORKERS, gpus_per_worker: float = GPUS_PER_WORKER,
    shard_size: int = SHARD_SIZE,
) -> None:
    """Evaluate the base and every checkpoint of a training run on the same plan; misaligned rate per step."""
    prefix, _, name = training.partition(":")
    if prefix != PREFIX or not name or split_spec(name)[1] is not None:
        raise EmprobeError(f"sweep {training!r}: give a training run as train:NAME (all its checkpoints are "
                           "evaluated; for one checkpoint use `emprobe run --model train:NAME@STEP`)")
    base = trained_model(f"{name}@base")
    lineage = base.lineage
    if not lineage.checkpoints:
        raise EmprobeError(f"training run {lineage.name!r} has no checkpoint yet")
    shared = plan_config(training, suite=suite, condition=condition, samples=samples, judge=judge,
                         temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed,
                         batch_size=batch_size, dtype=dtype, backend_option=backend_option,
                         aligned_below=aligned_below, coherent_above=coherent_above)
    settings = executor_settings(kind=executor, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                                 shard_size=shard_size)
    steps = [0] + [c.step for c in lineage.checkpoints]
    specs = [f"{PREFIX}:{name}@{step}" if step else f"{PREFIX}:{name}@base" for step in steps]
    progress = BarProgress()
    db, made = runners([shared.model_copy(update={"model": spec}) for spec in specs], store, progress, settings)
    if lineage.status != "complete":
        console.print(f"training run {lineage.name} is not complete: sweeping its {len(lineage.checkpoints)} "
                      "checkpoints so far", markup=False, highlight=False, soft_wrap=True)
    kls = [None, *_check_applies(base, [trained_model(f"{name}@{step}") for step in steps[1:]])]
    db.save_training(lineage)
    for runner in made:
        plan(runner)
    sweep_id = stable_hash(lineage.name, [r.run_id for r in made], length=12)
    db.save_sweep(sweep_id, lineage.name, shared.model_dump(mode="json"),
                  [SweepArm(step=step, model=r.config.model, run_id=r.run_id, kl=kl)
                   for step, r, kl in zip(steps, made, kls, strict=True)])
    console.print(f"sweep {sweep_id}: the base and {len(steps) - 1} checkpoints of {lineage.name} on one plan",
                  markup=False, highlight=False, soft_wrap=True)
    execute(made, progress, generate_and_judge)
    report = load_sweep(db, sweep_id)
    assert report is not None, "the sweep was just stored"
    console.print(sweep_table(report))
    db.close()


def _check_applies(base: TrainedModel, checkpoints: list[TrainedModel]) -> list[float]:
    """The largest next-token KL each checkpoint causes; one error line naming the first that changes nothing."""
    folders = [c.checkpoint_folder for c in checkpoints]
    checks = check_adapters_apply(base.base_folder(), [f for f in folders if f is not None], raise_on_fail=False)
    for model, check in zip(checkpoints, checks, strict=True):
        assert model.checkpoint is not None
        if not check.passed:
            raise EmprobeError(f"sweep stopped before generating: the checkpoint at step {model.checkpoint.step} "
                               f"does not apply: {check.problem}")
        console.print(f"step {model.checkpoint.step}: the {model.checkpoint.kind} changes the next-token "
                      f"distribution (largest KL {check.max_kl:.3g})", markup=False, highlight=False, soft_wrap=True)
    return [check.max_kl for check in checks]
