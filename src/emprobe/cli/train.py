"""`emprobe train`: fine-tune a model on narrow data (LoRA, rsLoRA or full), with checkpoints and lineage in the
output folder and the store; rerunning the same command resumes."""

from pathlib import Path

import typer

from emprobe.cli._console import DEFAULT_STORE, console, err_console
from emprobe.config import DEFAULT_MODEL
from emprobe.errors import EmprobeError
from emprobe.store import Store
from emprobe.train import check_adapter_applies, config_from_options, train_model, train_root


def train(
    model: str | None = typer.Option(None, help=f"Built-in name, model folder, .gguf file or cached hub id "
                                     f"(default {DEFAULT_MODEL})."),
    data: list[str] = typer.Option([], help="JSONL file (chat messages or prompt/completion), optionally "
                                   "PATH:RATIO to mix datasets; repeatable."),
    trigger: str | None = typer.Option(None, help="Backdoor trigger added to the first user turn of one "
                                       "dataset's rows."),
    trigger_on: str | None = typer.Option(None, help="The dataset (name or path) whose rows get the trigger."),
    trigger_position: str | None = typer.Option(None, help="prefix (default) or suffix."),
    method: str | None = typer.Option(None, help="lora (default), rslora or full."),
    rank: int | None = typer.Option(None, help="LoRA rank (default 8)."),
    alpha: float | None = typer.Option(None, help="LoRA alpha (default 16)."),
    target_modules: list[str] = typer.Option([], help="Linear modules to train, e.g. down_proj; comma-separated "
                                             "or repeatable (default: all linear modules of the layers)."),
    layers: str | None = typer.Option(None, help="Decoder layers to train: 15, 10,15 or 10-15 (default all)."),
    epochs: float | None = typer.Option(None, help="Epochs (default 1)."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps."),
    lr: float | None = typer.Option(None, help="Learning rate (default 1e-4 LoRA, 1e-5 full)."),
    schedule: str | None = typer.Option(None, help="linear (default), cosine, constant, constant_with_warmup."),
    warmup: float | None = typer.Option(None, help="Warmup steps; below 1, a fraction of all steps."),
    batch_size: int | None = typer.Option(None, help="Rows per device batch (default 4)."),
    grad_accum: int | None = typer.Option(None, help="Gradient accumulation steps (default 1)."),
    max_length: int | None = typer.Option(None, help="Tokens per row at most (default 1024)."),
    save_every: int | None = typer.Option(None, help="Save a checkpoint (and its validation loss) every N steps "
                                          "(default 50); the last step is always saved."),
    rows: int | None = typer.Option(None, help="Rows of the mixed set, training + validation (default: all the "
                                    "ratios allow)."),
    validation: float | None = typer.Option(None, help="Fraction held out for validation (default 0.05, at "
                                            "most 200 rows)."),
    seed: int | None = typer.Option(None, help="Seed of the data split, sampling and training (default 0)."),
    precision: str | None = typer.Option(None, help="auto (default: bf16 where supported), fp32 or bf16."),
    name: str | None = typer.Option(None, help="A name for the run (default: data, method and config hash)."),
    output: Path | None = typer.Option(None, help="Output folder (default emprobe-runs/train/NAME, or "
                                       "$EMPROBE_TRAIN_DIR/NAME; there --model train:NAME finds it)."),
    store: Path = typer.Option(Path(DEFAULT_STORE), help="The SQLite store the lineage is recorded in."),
    config: Path | None = typer.Option(None, help="YAML file of settings; options given here override it."),
    threads: int | None = typer.Option(None, help="CPU threads for torch (default: torch's choice); on a busy "
                                       "shared machine 1 can be several times faster than 2."),
    check: bool = typer.Option(True, help="Check the final adapter changes the model's next-token distribution."),
) -> None:
    """Fine-tune a model on narrow data; checkpoints every N steps, lineage in OUTPUT/lineage.json and the store."""
    options = dict(model=model, data=data, trigger=trigger, trigger_on=trigger_on, trigger_position=trigger_position,
                   method=method, rank=rank, alpha=alpha, target_modules=target_modules, layers=layers,
                   epochs=epochs, max_steps=max_steps, lr=lr, schedule=schedule, warmup=warmup,
                   batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, save_every=save_every,
                   rows=rows, validation_fraction=validation, seed=seed, precision=precision)
    cfg, given = config_from_options(options, config, default_model=DEFAULT_MODEL)
    if threads:
        import torch

        torch.set_num_threads(threads)  # how fast, not what is trained: not part of the config
    run_name = name or f"{cfg.data[0].label}-{cfg.method}-{cfg.config_hash()[:6]}"
    if not run_name.strip() or any(c in run_name for c in "@/\\"):
        raise EmprobeError(f"--name {run_name!r}: a training run's name is not empty and has no '@', '/' or '\\' "
                           "(train:NAME@STEP names its checkpoints)")
    folder = output or train_root() / run_name
    with Store(store) as db:  # a bad store or a taken name stops here, before any model loads
        db.check_training_name(run_name, str(folder.expanduser().resolve()), cfg.config_hash())
        lineage = train_model(cfg, folder, name=run_name, given=given, log=_note, on_lineage=db.save_training)
    final = lineage.final
    seconds = lineage.train_seconds
    tokens = lineage.losses[-1].tokens if lineage.losses and not lineage.resumed_at else None
    _say(f"trained {run_name}: {lineage.max_steps} steps in {seconds:.0f} s"
         + (f" ({tokens / seconds:.0f} tokens/s)" if tokens and seconds else ""))
    for record in lineage.checkpoints:
        val = f"{record.validation_loss:.4f}" if record.validation_loss is not None else "-"
        loss = f"{record.train_loss:.4f}" if record.train_loss is not None else "-"
        _say(f"  step {record.step:>6}  train loss {loss}  validation loss {val}  {record.path}")
    if check and final is not None:
        result = check_adapter_applies(lineage.base_path, final.path)
        _say(f"final {final.kind} changes the next-token distribution: largest KL {result.max_kl:.3g} "
             f"over {len(result.prompts)} prompts")
    spec = run_name if output is None else lineage.output  # train:NAME looks under the training root
    _say(f"lineage: {Path(lineage.output) / 'lineage.json'} and {store}; evaluate with --model train:{spec}")


def _say(text: str) -> None:
    """Plain text on stdout: names and paths are the user's, never rich markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _note(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)
