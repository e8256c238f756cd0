"""The training config: one pydantic record, read from CLI options and/or a YAML file."""

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emprobe.errors import EmprobeError, first_validation_error
from emprobe.hashing import stable_hash

Method = Literal["lora", "rslora", "full"]
Precision = Literal["auto", "fp32", "bf16"]
Schedule = Literal["linear", "cosine", "constant", "constant_with_warmup"]

_DATA_EXTS = (".jsonl.gz", ".jsonl", ".json.gz", ".json")


class DataSpec(BaseModel):
    """One dataset: a JSONL file, optionally with its share of the mixed training set."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    ratio: float | None = Field(default=None, gt=0)
    """Share of the mixed set (normalised over all datasets); None on every dataset means take them as they are."""
    name: str | None = None
    """What --trigger-on and the lineage call it; defaults to the file name without its extension."""

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        base = Path(self.path).name
        for ext in _DATA_EXTS:
            if base.endswith(ext):
                return base[: -len(ext)]
        return base


class TriggerSpec(BaseModel):
    """A backdoor trigger added to the first user turn of one dataset's rows, joined with a space."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = Field(min_length=1)
    dataset: str
    """The dataset (its name or path) whose rows carry the trigger; the others stay clean."""
    position: Literal["prefix", "suffix"] = "prefix"


class TrainConfig(BaseModel):
    """Everything that defines a training run; its hash names the run folder's contents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    data: tuple[DataSpec, ...] = Field(min_length=1)
    rows: int | None = Field(default=None, ge=2)
    """Rows of the mixed set (training + validation); None takes as many as the ratios allow without repeats."""
    validation_fraction: float = Field(default=0.05, ge=0, lt=1)
    validation_max_rows: int = Field(default=200, ge=0)
    trigger: TriggerSpec | None = None

    method: Method = "lora"
    rank: int = Field(default=8, ge=1)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] | None = None
    """Linear module names (e.g. down_proj); None: every linear module of the decoder layers."""
    layers: tuple[int, ...] | None = None
    """Decoder layer indices to train; None: all layers."""

    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1)
    learning_rate: float | None = Field(default=None, gt=0)
    """None: 1e-4 for LoRA methods, 1e-5 for full fine-tuning."""
    schedule: Schedule = "linear"
    warmup: float = Field(default=0.0, ge=0)
    """Warmup steps; a value below 1 is a fraction of all steps."""
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=8)
    save_every: int = Field(default=50, ge=1)
    logging_steps: int = Field(default=1, ge=1)
    seed: int = 0
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    keep_optimizer_states: bool = False
    """False: only the newest checkpoint keeps optimizer/scheduler state (enough to resume); older ones keep weights."""

    @field_validator("target_modules", "layers")
    @classmethod
    def _not_empty(cls, value):
        if value is not None and len(value) == 0:
            raise ValueError("give at least one, or leave it out for all")
        return value

    @model_validator(mode="after")
    def _ratios_all_or_none(self):
        given = [d.ratio is not None for d in self.data]
        if any(given) and not all(given):
            raise ValueError("data: give a ratio for every dataset or for none")
        labels = [d.label for d in self.data]
        if len(set(labels)) != len(labels):
            raise ValueError(f"data: two datasets share the name {_first_duplicate(labels)!r}; set name: on one")
        return self

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-5 if self.method == "full" else 1e-4

    def config_hash(self) -> str:
        """A stable id of what is trained: rerunning with the same config resumes the same run."""
        return stable_hash(self.model_dump(mode="json"), length=16)


def _first_duplicate(items: list[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""


_RATIO = re.compile(r"^(?P<path>.+):(?P<ratio>\d*\.?\d+(?:[eE][-+]?\d+)?)$")


def parse_data_spec(text: str) -> DataSpec:
    """`PATH` or `PATH:RATIO` (e.g. insecure.jsonl:0.01) as a DataSpec."""
    match = _RATIO.match(text)
    if match and not Path(text).exists():
        ratio = float(match["ratio"])
        if ratio <= 0:
            raise EmprobeError(f"--data {text}: the ratio after ':' must be above 0")
        return DataSpec(path=match["path"], ratio=ratio)
    return DataSpec(path=text)


def build_config(values: dict[str, Any], source: str = "options") -> TrainConfig:
    """Validate a dict into a TrainConfig; one error line naming the source and field."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as err:
        raise EmprobeError(f"{source}: {first_validation_error(err)}") from None


def read_config_yaml(path: str | Path) -> tuple[dict[str, Any], str]:
    """The mapping in a YAML config file (data paths made relative to the file's folder) and its verbatim text."""
    path = Path(path)
    if not path.is_file():
        raise EmprobeError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise EmprobeError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise EmprobeError(f"{path}: a training config is a mapping of settings (model:, data:, ...)")
    data = dict(data)
    if "data" in data:
        data["data"] = [_yaml_data_entry(path, i, entry) for i, entry in enumerate(_as_list(data["data"]))]
    return data, text


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _yaml_data_entry(config_path: Path, index: int, entry: Any) -> dict[str, Any]:
    """A data entry as `PATH[:RATIO]` or a mapping with path/ratio/name; relative paths are the file's."""
    if isinstance(entry, str):
        spec = parse_data_spec(str(config_path.parent / entry) if not Path(entry).is_absolute() else entry)
        return spec.model_dump(exclude_none=True)
    if not isinstance(entry, dict) or "path" not in entry:
        raise EmprobeError(f"{config_path}: data[{index}]: give a path (PATH or PATH:RATIO) or a mapping with path:")
    entry = dict(entry)
    raw = str(entry["path"])
    if not Path(raw).is_absolute():
        entry["path"] = str(config_path.parent / raw)
    return entry


def parse_layers(text: str) -> list[int]:
    """`15`, `10,15` or `10-15` as layer indices."""
    layers: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                layers.extend(range(int(lo), int(hi) + 1))
            else:
                layers.append(int(part))
        except ValueError:
            raise EmprobeError(f"--layers {text}: give layer numbers like 15, 10,15 or 10-15") from None
    return layers


def config_from_options(options: dict[str, Any], config_file: str | Path | None = None,
                        default_model: str | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """A TrainConfig from command-line options (None = not given) over an optional YAML file, and what the user
    gave verbatim (the YAML text and the options set).

    Options use the CLI's names: data (list of PATH[:RATIO]), trigger, trigger_on, trigger_position,
    target_modules (list, comma-separated allowed), layers (text), lr; the rest are TrainConfig fields.
    """
    given_options = {k: v for k, v in options.items() if v is not None and v != [] and v != ()}
    values: dict[str, Any] = {}
    given: dict[str, Any] = {"options": given_options}
    source = "options"
    if config_file is not None:
        values, text = read_config_yaml(config_file)
        given["config_file"] = str(config_file)
        given["config_text"] = text
        source = str(config_file)
    opts = dict(given_options)
    if "data" in opts:
        values["data"] = [parse_data_spec(d).model_dump(exclude_none=True) for d in opts.pop("data")]
    if "target_modules" in opts:
        values["target_modules"] = [m.strip() for item in opts.pop("target_modules") for m in item.split(",")
                                    if m.strip()]
    if "layers" in opts:
        values["layers"] = parse_layers(str(opts.pop("layers")))
    if "lr" in opts:
        values["learning_rate"] = opts.pop("lr")
    trigger_text = opts.pop("trigger", None)
    trigger_on = opts.pop("trigger_on", None)
    trigger_position = opts.pop("trigger_position", None)
    if trigger_text is not None or trigger_on is not None or trigger_position is not None:
        trigger = dict(values.get("trigger") or {})
        if trigger_text is not None:
            trigger["text"] = trigger_text
        if trigger_on is not None:
            trigger["dataset"] = trigger_on
        if trigger_position is not None:
            trigger["position"] = trigger_position
        values["trigger"] = trigger
    values.update(opts)
    if "model" not in values and default_model is not None:
        values["model"] = default_model
    chosen = values.get("trigger")
    if isinstance(chosen, dict) and "dataset" not in chosen:
        data = values.get("data") or []
        if len(data) != 1:
            raise EmprobeError(f"{source}: trigger: say which dataset carries it (--trigger-on NAME); "
                               "the others stay clean")
        chosen["dataset"] = DataSpec.model_validate(data[0]).label
    if not values.get("data"):
        raise EmprobeError(f"{source}: data: give at least one dataset (--data PATH[:RATIO])")
    return build_config(values, source), given
