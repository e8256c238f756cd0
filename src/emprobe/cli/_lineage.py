"""`emprobe runs show NAME` for a training run: its lineage as the store holds it, every user-given text escaped."""

import json
import math

from rich.table import Table
from rich.text import Text

from emprobe.cli._console import console, safe
from emprobe.store import Store, TrainingRun

MAX_LOSS_ROWS = 40
"""Loss rows printed at most (evenly spaced, the last always); --json has all of them."""


def print_training(db: Store, run: TrainingRun, as_json: bool) -> None:
    """The lineage: base, data, mix, settings, versions, what the user gave, losses, checkpoints and sweeps."""
    lineage = run.lineage
    if as_json:
        console.print_json(lineage.model_dump_json())
        return
    mix, cfg = lineage.mix, lineage.config
    lines = [
        f"training run {lineage.name}  status {lineage.status}  created {run.created}  updated {run.updated}",
        f"output: {lineage.output}",
        f"base: {lineage.base_model} (identity {lineage.base_identity}; weights {lineage.base_path})",
        *(f"data: {f.name}: {f.rows} rows ({f.format}), sha256 {f.sha256}, content sha256 {f.content_sha256}, {f.path}"
          for f in lineage.data),
        f"mix: seed {mix.seed}; {mix.rows} rows = {mix.train_rows} training + {mix.validation_rows} validation; "
        + "; ".join(f"{s.name}: {s.selected} of {s.available} (ratio {s.ratio:.4g}), {s.train} training, "
                    f"{s.validation} validation, {s.triggered} triggered" for s in mix.sources),
        "trigger: " + (f"{mix.trigger.text!r} as a {mix.trigger.position} on {mix.trigger.dataset}" if mix.trigger
                       else "none"),
        _tokens("training tokens", lineage.train_tokens),
        *([_tokens("validation tokens", lineage.validation_tokens)] if lineage.validation_tokens else []),
        f"method: {lineage.method}" + ("" if lineage.method == "full" else f" r={cfg.rank} alpha={cfg.alpha:g}")
        + f" on {', '.join(lineage.target_modules)}, layers "
        + (", ".join(map(str, lineage.layers)) if lineage.layers is not None else "all")
        + f"; {lineage.trainable_parameters:,} of {lineage.total_parameters:,} parameters trained",
        f"training: {lineage.max_steps} steps, lr {cfg.lr:g} ({cfg.schedule}, warmup {cfg.warmup:g}), batch "
        f"{cfg.batch_size} x {cfg.grad_accum}, max length {cfg.max_length}, seed {cfg.seed}, {lineage.precision} on "
        f"{lineage.device}; {lineage.train_seconds:.0f} s"
        + (f"; resumed at steps {', '.join(map(str, lineage.resumed_at))}" if lineage.resumed_at else ""),
        f"config (hash {lineage.config_hash}): {json.dumps(cfg.model_dump(mode='json'), sort_keys=True)}",
        f"given: {json.dumps(lineage.given.get('options', {}), sort_keys=True)}",
        *([f"config file {lineage.given.get('config_file')}:\n{lineage.given['config_text']}"]
          if "config_text" in lineage.given else []),
        "versions: " + ", ".join(f"{k} {v}" for k, v in lineage.versions.items()),
    ]
    for line in lines:
        console.print(safe(line))
    console.print(_losses(run))
    console.print(_checkpoints(run))
    sweeps = db.sweeps(lineage.name)
    for s in sweeps:
        console.print(safe(f"sweep {s.sweep_id}: base + {len(s.arms) - 1} checkpoints, updated {s.updated} "
                           f"(emprobe report {s.sweep_id})"))
    if not sweeps:
        console.print(safe(f"no sweep yet: emprobe sweep train:{lineage.name}"))


def _tokens(what: str, stats) -> str:
    return (f"{what}: {stats.rows} rows, {stats.tokens:,} tokens, {stats.assistant_tokens:,} trained; "
            f"{stats.truncated} rows cut at max length, {stats.dropped} left out")


def _losses(run: TrainingRun) -> Table:
    points = run.lineage.losses
    every = max(1, math.ceil(len(points) / MAX_LOSS_ROWS))
    shown = [p for i, p in enumerate(points) if i % every == 0 or i == len(points) - 1]
    title = "training loss" + (f" (every {every}th of {len(points)} logged steps; --json has all)" if every > 1 else "")
    table = Table("step", "epoch", "loss", "learning rate", "grad norm", "tokens", title=title, title_justify="left")
    for p in shown:
        table.add_row(str(p.step), f"{p.epoch:.3f}", f"{p.loss:.4f}",
                      f"{p.learning_rate:.3g}" if p.learning_rate is not None else "\u2014",
                      f"{p.grad_norm:.3g}" if p.grad_norm is not None else "\u2014",
                      str(p.tokens) if p.tokens is not None else "\u2014")
    return table


def _checkpoints(run: TrainingRun) -> Table:
    table = Table("step", "epoch", "kind", "train loss", "val loss", "update norm", "largest", "weights sha256", "path",
                  title="checkpoints", title_justify="left")
    for c in run.lineage.checkpoints:
        total = math.sqrt(sum(n.norm ** 2 for n in c.norms))
        top = max(c.norms, key=lambda n: n.norm, default=None)
        table.add_row(str(c.step), f"{c.epoch:.3f}", c.kind,
                      f"{c.train_loss:.4f}" if c.train_loss is not None else "\u2014",
                      f"{c.validation_loss:.4f}" if c.validation_loss is not None else "\u2014",
                      f"{total:.4g}", Text(f"{top.module} {top.norm:.3g}") if top else "\u2014",
                      c.weights_sha256[:16], Text(c.path))
    return table
