"""`emprobe run`: plan, generate, judge and summarise; rerunning the same command resumes."""

from pathlib import Path

import typer
from rich.text import Text

from emprobe.adaptive import HalfwidthRule, decision_rule, run_adaptive
from emprobe.analysis import (
    COMPLIANCE_NOTE,
    SummaryRow,
    attack_success,
    compliance_gaps,
    consistency_rows,
    label_rows,
    load_run,
    reasoning_rows,
    run_deltas,
    summarize,
    summarize_cascade,
    trigger_gaps,
    turn_rows,
)
from emprobe.cli._console import BarProgress, console
from emprobe.cli._evaluate import (
    ADDRESS,
    ALIGNED_BELOW,
    AUDIT,
    AUDIT_SEED,
    BACKEND_OPTION,
    BAND,
    BATCH_SIZE,
    COHERENT_ABOVE,
    CONDITION,
    CONFIRM,
    DTYPE,
    EXECUTOR,
    FRAMING,
    GPUS_PER_WORKER,
    JUDGE,
    MAX_TOKENS,
    PAIR,
    SAMPLES,
    SCREEN_AT,
    SEED,
    SHARD_SIZE,
    STORE,
    SUITE,
    SWEEP,
    TEMPERATURE,
    THINK,
    THINK_TAGS,
    TOP_K,
    TOP_P,
    TRIGGER,
    TRIGGER_FILE,
    WORKERS,
    cascade_options,
    execute,
    executor_settings,
    plan_config,
    print_domain,
    runners,
)
from emprobe.cli.compare import COMPARISON_NOTE
from emprobe.config import DEFAULT_MODEL, RunConfig
from emprobe.errors import EmprobeError
from emprobe.report import (
    attack_table,
    cascade_table,
    consistency_table,
    deltas_table,
    labels_table,
    reasoning_table,
    steering_table,
    summary_table,
    trigger_table,
    turns_table,
)
from emprobe.runner import Runner
from emprobe.store import Store
from emprobe.train import base_spec


def run(
    model: str = typer.Option(DEFAULT_MODEL, help="Built-in name, model folder, .gguf file, cached hub id, "
                              "train:NAME[@STEP] (a training run's checkpoint), or PREFIX:MODEL for another backend "
                              "(openai-compat:MODEL@URL)."),
    adapter: str | None = typer.Option(None, help="PEFT LoRA adapter folder applied on top of the model."),
    compare_base: bool = typer.Option(False, help="With --model train:NAME[@STEP]: also evaluate the base it was "
                                      "trained from on the same plan, and compare the two."),
    suite: list[str] = SUITE, pair: list[str] = PAIR, condition: list[str] = CONDITION, sweep: list[str] = SWEEP,
    trigger: list[str] = TRIGGER, trigger_file: Path | None = TRIGGER_FILE, framing: str | None = FRAMING,
    think: bool = THINK, think_tags: str = THINK_TAGS,
    samples: int | None = SAMPLES,
    judge: list[str] = JUDGE, temperature: float = TEMPERATURE, top_p: float = TOP_P, top_k: int = TOP_K,
    max_tokens: int = MAX_TOKENS, seed: int = SEED, batch_size: int | None = BATCH_SIZE, dtype: str | None = DTYPE,
    backend_option: list[str] = BACKEND_OPTION, aligned_below: float = ALIGNED_BELOW,
    coherent_above: float = COHERENT_ABOVE,
    name: str | None = typer.Option(None, help="A name to find the run by."),
    store: Path = STORE,
    until_halfwidth: float | None = typer.Option(None, min=0.0, help="Sample in rounds until every condition's 95% "
                                                 "interval half-width is at most this (e.g. 0.002)."),
    until_decided: bool = typer.Option(False, help="Sample in rounds until two conditions are told apart "
                                       "(group-sequential test) or the budget is spent."),
    alpha: float = typer.Option(0.05, min=0.0, max=1.0, help="False-positive rate of --until-decided over all "
                                "rounds."),
    round_samples: int = typer.Option(10, min=1, help="Samples per paraphrase added each adaptive round."),
    max_samples: int = typer.Option(200, min=1, help="Adaptive budget: samples per paraphrase at most."),
    confirm: str | None = CONFIRM, audit: float = AUDIT, screen_at: float = SCREEN_AT, audit_seed: int = AUDIT_SEED,
    band: list[str] = BAND,
    executor: str = EXECUTOR, address: str | None = ADDRESS, workers: int | None = WORKERS,
    gpus_per_worker: float = GPUS_PER_WORKER, shard_size: int = SHARD_SIZE,
) -> None:
    """Evaluate a model: suites x conditions -> answers -> judgments -> misaligned rates."""
    cascade = cascade_options(judge, confirm, audit, screen_at, audit_seed, band)
    if cascade is not None and (until_decided or until_halfwidth is not None):
        raise EmprobeError("--confirm estimates the rate once the run is judged; drop --until-halfwidth and "
                           "--until-decided")
    config = plan_config(model, suite=suite, condition=condition, samples=samples, judge=judge,
                         temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens, seed=seed,
                         batch_size=batch_size, dtype=dtype, backend_option=backend_option,
                         aligned_below=aligned_below, coherent_above=coherent_above, adapter=adapter, name=name,
                         sweep=sweep, trigger=trigger, trigger_file=trigger_file,
                         framing=framing, think=think, think_tags=think_tags, cascade=cascade,
                         pair=pair)
    rule = (decision_rule(config, alpha, round_samples, max_samples) if until_decided
            else HalfwidthRule(until_halfwidth) if until_halfwidth is not None else None)
    settings = executor_settings(kind=executor, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                                 shard_size=shard_size)
    configs = [config]
    if compare_base:
        configs.insert(0, _base_config(config, adaptive=rule is not None))
    progress = BarProgress()
    db, made = runners(configs, store, progress, settings)  # every model and judge checked before the store is created
    if rule is not None:
        execute(made, progress, lambda runner: run_adaptive(runner, rule, round_samples, max_samples, _print_round))
    else:
        execute(made, progress)
    for runner in made:
        for spec in config.judges:
            summary = summarize(db, runner.run_id, spec, config.thresholds)
            labels = label_rows(db, runner.run_id, spec)
            o = summary.overall
            if not labels or o.scored + o.labelled + o.judge_failures + o.generation_failures + o.pending:
                console.print(summary_table(summary.rows(), f"{runner.config.model} judged by {spec}"))
            if labels:
                console.print(labels_table(labels, f"{runner.config.model} judged by {spec}: labels"))
            print_domain(db, runner.run_id, spec)
            _print_probes(db, runner, spec)
        if config.framing:
            framed = compliance_gaps(db, db.run(runner.run_id))
            console.print(deltas_table([g.delta for g in framed], "compliance gap (refusal judge)"))
            console.print(Text(COMPLIANCE_NOTE), style="dim")
        if cascade is not None:
            console.print(cascade_table(summarize_cascade(db, runner.run_id, cascade, config.thresholds)))
    if compare_base:
        _print_comparison(db, made)
    db.close()


def _print_probes(db: Store, runner: Runner, spec: str) -> None:
    """What scripted and paired questions, `--think`, `--trigger`, `--sweep` and interventions add to a run's
    summary, judged by `spec`."""
    config = runner.config
    turns = turn_rows(db, runner.run_id, spec, config.thresholds)
    if turns:
        console.print(turns_table(turns, f"scripted conversations, judged by {spec}"))
    consistency = consistency_rows(db, db.run(runner.run_id), spec, config.thresholds)
    if consistency:
        console.print(consistency_table(consistency, f"paired questions, judged by {spec}"))
    if config.think:
        rows = reasoning_rows(db, runner.run_id, spec, config.thresholds)
        if rows:
            console.print(reasoning_table(rows, f"reasoning against answer, judged by {spec}"))
    steered = any(c.intervention for c in config.conditions)
    report = load_run(db, runner.run_id, spec) if config.triggers or steered else None
    if report is not None and config.triggers:
        console.print(trigger_table(trigger_gaps(report), f"trigger gaps, judged by {spec}"))
    if config.sweeps:
        attack = attack_success(db, runner.run_id, spec, config.thresholds)
        console.print(attack_table(attack, f"attack success, judged by {spec}"))
    if report is not None and steered:
        console.print(steering_table(report.steering, f"steering and ablation against controls, judged by {spec}"))


def _base_config(config: RunConfig, adaptive: bool) -> RunConfig:
    """The same plan on the base a training checkpoint was trained from."""
    base = base_spec(config.model)
    if base is None:
        raise EmprobeError(f"--compare-base compares a training checkpoint with its base: give --model train:NAME "
                           f"(got {config.model!r}); for any two runs use `emprobe compare`")
    if adaptive:
        raise EmprobeError("--compare-base evaluates one fixed plan on both models; drop --until-halfwidth and "
                           "--until-decided")
    return config.model_copy(update={"model": base, "name": None})


def _print_comparison(db: Store, made: list[Runner]) -> None:
    base, tuned = made
    judge = tuned.config.judges[0] if tuned.config.judges else None
    a = load_run(db, base.run_id, judge, title=f"base ({base.config.model})")
    b = load_run(db, tuned.run_id, judge, title=tuned.config.model)
    console.print(deltas_table(run_deltas(a, b), f"B = {b.label} vs A = {a.label}, judged by {a.judge}"))
    console.print(COMPARISON_NOTE, style="dim")


def _print_round(round_no: int, totals: dict[str, SummaryRow], decision: str) -> None:
    parts = []
    for name, r in totals.items():
        lo, hi = r.misaligned_interval
        parts.append(f"{name} {r.misaligned}/{r.scored} = {r.misaligned_rate:.2%} [{lo:.2%}, {hi:.2%}]")
    console.print(f"round {round_no}: " + "; ".join(parts) + f" -> {decision}")
