"""Run a training: data -> assistant-only token labels -> TRL's SFTTrainer (with PEFT for LoRA) -> checkpoints.

emprobe does not write a training loop. It prepares a tokenized dataset whose labels already hold the loss
mask, passes it to SFTTrainer, checks every batch still has a token to learn from, and records each saved
checkpoint (step, validation loss, content hash, update norms) in a marker file and in lineage.json.
Rerunning with the same config and output folder resumes from the newest complete checkpoint.
"""

import json
import shutil
import time
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from emprobe.errors import EmprobeError
from emprobe.train._config import TrainConfig
from emprobe.train._data import prepare_data
from emprobe.train._lineage import (
    CHECKPOINT_FILE,
    LINEAGE_FILE,
    CheckpointRecord,
    LossPoint,
    TrainLineage,
    checkpoint_record,
    library_versions,
    lora_update_norms,
    read_lineage,
    weight_delta_norms,
    weights_digest,
)
from emprobe.train._mask import IGNORE, encode_rows
from emprobe.train._methods import (
    lora_config,
    quiet_peft_warnings,
    resolve_precision,
    resolve_targets,
    restrict_full,
)

RUN_FILE = "emprobe-train.json"
_RESUME_STATE = ("optimizer.pt", "scheduler.pt")
_PRUNABLE = ("optimizer.pt", "scheduler.pt", "scaler.pt")


def checkpoint_folders(output: str | Path) -> list[Path]:
    """checkpoint-N folders of an output folder, by step."""
    found = []
    for path in Path(output).glob("checkpoint-*"):
        suffix = path.name.removeprefix("checkpoint-")
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def _claim(output: Path, config: TrainConfig, name: str, given: dict[str, Any]) -> None:
    """Bind the output folder to this config; a folder holding another config is refused."""
    run_file = output / RUN_FILE
    if run_file.is_file():
        held = json.loads(run_file.read_text())
        if held.get("config_hash") != config.config_hash():
            raise EmprobeError(f"{output}: holds a training run with a different config "
                               f"(hash {held.get('config_hash')}, this one {config.config_hash()}); "
                               "give another output folder or name, or remove that folder")
        return
    if any(output.iterdir()):
        raise EmprobeError(f"{output}: the folder is not empty and is not an emprobe training run; give another")
    run_file.write_text(json.dumps({"name": name, "config_hash": config.config_hash(),
                                    "config": config.model_dump(mode="json"), "given": given}, indent=1))


def _resume_point(output: Path) -> Path | None:
    """The newest checkpoint with emprobe's marker and optimizer state; unfinished checkpoint folders are removed."""
    best = None
    for folder in checkpoint_folders(output):
        if checkpoint_record(folder) is None:
            shutil.rmtree(folder)  # cut short by a kill while saving; it will be written again
        elif all((folder / f).is_file() for f in _RESUME_STATE):
            best = folder
    return best


@cache
def _trainer_class():
    """SFTTrainer with one addition: a batch with no assistant token is an error, not a silent zero loss."""
    from trl import SFTTrainer

    class MaskedSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            labels = inputs.get("labels")
            if labels is not None and not bool((labels[:, 1:] != IGNORE).any()):
                raise EmprobeError("a training batch has no assistant token to learn from: its loss mask is all "
                                   "zeros (check the data and max_length)")
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return MaskedSFTTrainer


def _losses(log_history: Sequence[dict[str, Any]]) -> tuple[LossPoint, ...]:
    points = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            tokens = entry.get("num_tokens")
            points[int(entry["step"])] = LossPoint(
                step=int(entry["step"]), epoch=float(entry.get("epoch", 0.0)), loss=float(entry["loss"]),
                learning_rate=entry.get("learning_rate"), grad_norm=entry.get("grad_norm"),
                tokens=int(tokens) if tokens is not None else None)
    return tuple(points[s] for s in sorted(points))


def _recorder(output: Path, base_folder: Path, full: bool, keep_optimizer: bool, write_lineage):
    """A TrainerCallback that marks each saved checkpoint complete and keeps lineage.json current."""
    from transformers import TrainerCallback

    class CheckpointRecorder(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            folder = output / f"checkpoint-{step}"
            val = next((e["eval_loss"] for e in reversed(state.log_history)
                        if "eval_loss" in e and e.get("step") == step), None)
            train_loss = next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None)
            norms = weight_delta_norms(base_folder, folder) if full else lora_update_norms(folder)
            record = CheckpointRecord(step=step, epoch=float(state.epoch or 0.0), path=str(folder),
                                      kind="model" if full else "adapter", weights_sha256=weights_digest(folder),
                                      validation_loss=val, train_loss=train_loss, norms=tuple(norms))
            tmp = folder / f"{CHECKPOINT_FILE}.tmp"
            tmp.write_text(record.model_dump_json(indent=1))
            tmp.replace(folder / CHECKPOINT_FILE)  # the checkpoint counts only once this marker exists
            if not keep_optimizer:
                for older in checkpoint_folders(output):
                    if older != folder and checkpoint_record(older) is not None:
                        for name in _PRUNABLE:
                            (older / name).unlink(missing_ok=True)
                        for rng in older.glob("rng_state*.pth"):
                            rng.unlink()
            write_lineage(state, "running")

    return CheckpointRecorder()


def train_model(
    config: TrainConfig,
    output: str | Path,
    *,
    name: str | None = None,
    given: dict[str, Any] | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_lineage: Callable[[TrainLineage], None] | None = None,
) -> TrainLineage:
    """Train `config` into the folder `output` and return its lineage (also written to output/lineage.json).

    Rerunning with the same config and folder continues from the newest complete checkpoint; a run already
    complete is returned as it is. `given` is what the user wrote (kept verbatim in the lineage); `callbacks`
    are extra transformers TrainerCallbacks; `log` receives one-line progress notes; `on_lineage` receives the
    lineage each time it is written (every checkpoint, the end; once for a run already complete).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging

    try:
        from datasets import Dataset
        from trl import SFTConfig
    except ImportError as err:
        raise EmprobeError(f"training needs the train extra ({err.name} is missing): pip install 'emprobe[train]'")\
            from None

    from emprobe.model._resolve import materialize, resolve_model

    def say(text: str) -> None:
        if log is not None:
            log(text)

    output = Path(output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    name = name or output.name
    given = given if given is not None else {"options": config.model_dump(mode="json", exclude_defaults=True)}
    _claim(output, config, name, given)
    if (output / LINEAGE_FILE).is_file():
        previous = read_lineage(output)
        if previous.status == "complete":
            say(f"{output}: already trained ({previous.max_steps} steps); nothing to do")
            if on_lineage is not None:
                on_lineage(previous)
            return previous
    else:
        previous = None
    held = json.loads((output / RUN_FILE).read_text())

    resolved = resolve_model(config.model)
    base_folder = materialize(resolved.path, resolved.identity)
    tokenizer = AutoTokenizer.from_pretrained(base_folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = prepare_data(config.data, rows=config.rows, validation_fraction=config.validation_fraction,
                        validation_max_rows=config.validation_max_rows, trigger=config.trigger, seed=config.seed)
    if previous is not None and previous.data != data.files:
        changed = next(f.path for f, g in zip(data.files, previous.data, strict=False) if f != g)
        raise EmprobeError(f"{changed}: changed since this run began (sha256 differs from {output / LINEAGE_FILE}); "
                           "restore it or train into another folder")
    train_enc, train_stats = encode_rows(tokenizer, data.train, config.max_length, "training set")
    if data.validation:
        val_enc, val_stats = encode_rows(tokenizer, data.validation, config.max_length, "validation set")
    else:
        val_enc, val_stats = [], None

    sources = ", ".join(f"{s.name} {s.train}+{s.validation}" + (" (triggered)" if s.triggered else "")
                        for s in data.mix.sources)
    say(f"data: {data.mix.train_rows} training and {data.mix.validation_rows} validation rows ({sources}); "
        f"{train_stats.tokens} tokens, {train_stats.assistant_tokens} of them trained"
        + (f"; {train_stats.dropped} rows left out (no assistant token within max_length)" if train_stats.dropped
           else ""))
    precision = resolve_precision(config.precision)
    set_seed(config.seed)
    hf_logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    targets, layers = resolve_targets(config, model, config.model)
    full = config.method == "full"
    total_params = sum(p.numel() for p in model.parameters())
    if full:
        peft_config = None
        trainable = restrict_full(model, targets, layers,
                                  restricted=config.target_modules is not None or config.layers is not None)
    else:
        peft_config = lora_config(config, targets, layers)
        trainable = None

    has_val = bool(val_enc)
    args = SFTConfig(
        output_dir=str(output),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        lr_scheduler_type=config.schedule,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_every,
        eval_strategy="steps" if has_val else "no",
        eval_steps=config.save_every if has_val else None,
        prediction_loss_only=True,
        seed=config.seed,
        data_seed=config.seed,
        bf16=precision == "bf16",
        fp16=False,
        use_cpu=not torch.cuda.is_available(),  # transformers refuses bf16 on a CPU unless told it is one
        activation_checkpointing=config.gradient_checkpointing,
        max_length=None,  # rows are cut to max_length by emprobe, which counts what it drops
        packing=False,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )

    def as_dataset(rows):
        return Dataset.from_dict({"input_ids": [r.input_ids for r in rows], "labels": [r.labels for r in rows]})

    session_start = time.monotonic()
    prior_seconds = previous.train_seconds if previous else 0.0
    resume = _resume_point(output)
    resumed_at = (previous.resumed_at if previous else ()) + ((int(resume.name.split("-")[1]),) if resume else ())
    base_fields: dict[str, Any] = {}

    def write_lineage(state, status: str) -> TrainLineage:
        records = tuple(r for f in checkpoint_folders(output) if (r := checkpoint_record(f)) is not None)
        lineage = TrainLineage(
            **base_fields, status=status, max_steps=int(state.max_steps), losses=_losses(state.log_history),
            checkpoints=records, resumed_at=resumed_at,
            train_seconds=prior_seconds + time.monotonic() - session_start)
        lineage.write(output)
        if on_lineage is not None:
            on_lineage(lineage)
        return lineage

    quiet_peft_warnings()
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=as_dataset(train_enc),
        eval_dataset=as_dataset(val_enc) if has_val else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_recorder(output, base_folder, full, config.keep_optimizer_states, write_lineage), *callbacks],
    )
    if trainable is None:
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    base_fields.update(
        name=name, output=str(output), config_hash=config.config_hash(), config=config, given=held["given"],
        base_model=config.model, base_identity=resolved.identity, base_path=str(base_folder),
        data=data.files, mix=data.mix, train_tokens=train_stats, validation_tokens=val_stats,
        method=config.method, target_modules=tuple(targets), layers=tuple(layers) if layers is not None else None,
        trainable_parameters=trainable, total_parameters=total_params, precision=precision,
        device=_device_name(trainer.args.device), versions=library_versions(),
    )
    say(f"{config.method}: {trainable:,} of {total_params:,} parameters trained, {precision} on "
        f"{base_fields['device']}" + (f"; resuming from {resume.name}" if resume else ""))
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return write_lineage(trainer.state, "complete")


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
