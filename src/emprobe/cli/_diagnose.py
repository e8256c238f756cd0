"""What the diagnostics commands share: which model reads a stored run's answers."""

from emprobe.config import RunConfig
from emprobe.model import ModelRef, parse_options, resolve
from emprobe.store import RunRecord


def run_model(record: RunRecord, model: str | None, backend_option: list[str]) -> ModelRef:
    """`model` with `backend_option`, or by default the run's own model with its adapter and backend options."""
    if model is not None:
        return resolve(model, options=parse_options(backend_option))
    config = RunConfig.model_validate(record.config)
    return resolve(config.model, config.adapter, {**config.backend_options, **parse_options(backend_option)})
