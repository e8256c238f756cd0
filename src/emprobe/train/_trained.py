"""The `train:` backend: a training run's checkpoints as models, `--model train:NAME[@STEP]`.

`NAME` is a training output folder (one with lineage.json), or the name of one under the training root
(`$EMPROBE_TRAIN_DIR`, default `emprobe-runs/train`: where `emprobe train` writes by default). `@STEP` picks a
checkpoint (default: the final one), `@base` the base model it was trained from. Resolving reads only
lineage.json and adapter_config.json: the identity is the base's identity plus the checkpoint's recorded
content hash, so a copy of the same weights elsewhere is the same model and generations cached for it are reused.
Loading goes through the local (hf) backend: base + adapter for LoRA checkpoints, the folder for full ones, after
checking that the weights still hash to what training recorded.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.model import DEFAULT_BACKEND, Backend, BackendEntry, HFOptions, ModelRef, load_backend, resolve_model
from emprobe.model._resolve import materialize
from emprobe.train._lineage import LINEAGE_FILE, CheckpointRecord, TrainLineage, read_lineage, weights_digest

PREFIX = "train"
BASE = "base"
ROOT_ENV = "EMPROBE_TRAIN_DIR"
DEFAULT_ROOT = "emprobe-runs/train"
_ADAPTER_PATHS = ("base_model_name_or_path", "revision")
"""adapter_config.json keys that say where the base came from, not what the adapter does."""


def train_root() -> Path:
    """Where training runs are found by name: $EMPROBE_TRAIN_DIR, else emprobe-runs/train."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


@dataclass(frozen=True)
class TrainedModel:
    """What `train:NAME[@STEP]` names: a training run and one of its checkpoints (None: the base)."""

    folder: Path
    """The training output folder (holding lineage.json)."""
    lineage: TrainLineage
    checkpoint: CheckpointRecord | None

    @property
    def checkpoint_folder(self) -> Path | None:
        """The checkpoint's folder, found beside lineage.json so that a moved or copied output folder works."""
        if self.checkpoint is None:
            return None
        here = self.folder / Path(self.checkpoint.path).name
        return here if here.is_dir() else Path(self.checkpoint.path)

    @property
    def identity(self) -> str:
        """Base identity, plus the checkpoint's content: weights hash and (for adapters) what the config does."""
        record = self.checkpoint
        if record is None:
            return self.lineage.base_identity
        folder = self.checkpoint_folder
        assert folder is not None
        if record.kind == "model":
            return f"{self.lineage.base_identity}+model:{record.weights_sha256[:16]}"
        settings = json.loads((folder / "adapter_config.json").read_text())
        for key in _ADAPTER_PATHS:
            settings.pop(key, None)
        return f"{self.lineage.base_identity}+adapter:{stable_hash(record.weights_sha256, settings)}"

    def base_folder(self) -> Path:
        """The base as a folder transformers loads (a GGUF base is converted once, as for any model)."""
        return materialize(self.base_location(), self.lineage.base_identity)

    def base_location(self) -> str:
        """The base weights: the folder trained from if it is still there, else the base model resolved again
        (which must be the same weights)."""
        if (Path(self.lineage.base_path) / "config.json").is_file():
            return self.lineage.base_path
        resolved = resolve_model(self.lineage.base_model)
        if resolved.identity != self.lineage.base_identity:
            raise EmprobeError(f"training run {self.lineage.name!r}: its base {self.lineage.base_model!r} now resolves "
                               f"to other weights ({resolved.identity}; trained on {self.lineage.base_identity})")
        return resolved.path


def find_training(name: str) -> Path:
    """The output folder of training run `name` (a folder path or a name under the training root)."""
    given = Path(name).expanduser()
    if (given / LINEAGE_FILE).is_file():
        return given
    under = train_root() / name
    if (under / LINEAGE_FILE).is_file():
        return under
    root = train_root()
    known = sorted(p.parent.name for p in root.glob(f"*/{LINEAGE_FILE}")) if root.is_dir() else []
    where = f"training runs in {root}: {', '.join(known)}" if known else f"no training runs in {root}"
    raise EmprobeError(f"unknown training run {name!r} (no {LINEAGE_FILE} in {under} or {given}): {where}; "
                       f"give a training output folder (train:PATH) or set {ROOT_ENV}")


def split_spec(name: str) -> tuple[str, str | None]:
    """`NAME@STEP` as (NAME, STEP); STEP is None for the final checkpoint."""
    run, sep, step = name.rpartition("@")
    return (run, step) if sep and run else (name, None)


def base_spec(spec: str) -> str | None:
    """`train:NAME@base` for a model spec `train:NAME[@STEP]`; None for any other model."""
    prefix, _, name = spec.partition(":")
    return f"{PREFIX}:{split_spec(name)[0]}@{BASE}" if prefix == PREFIX and name else None


def trained_model(name: str) -> TrainedModel:
    """Resolve `NAME`, `NAME@STEP` or `NAME@base` to a training run's checkpoint, reading only small files."""
    run, step = split_spec(name)
    folder = find_training(run)
    try:
        lineage = read_lineage(folder)
    except ValueError as err:
        raise EmprobeError(f"{folder / LINEAGE_FILE}: not a lineage record emprobe can read ({err})") from None
    steps = ", ".join(str(c.step) for c in lineage.checkpoints) or "none yet"
    if step == BASE:
        return TrainedModel(folder, lineage, None)
    if step is None:
        if lineage.final is None:
            raise EmprobeError(f"training run {run!r} is not complete (checkpoints at steps {steps}): name one, e.g. "
                               f"train:{run}@{lineage.checkpoints[-1].step if lineage.checkpoints else 'STEP'}, "
                               "or rerun the same `emprobe train` to finish it")
        return TrainedModel(folder, lineage, lineage.final)
    found = next((c for c in lineage.checkpoints if str(c.step) == step), None)
    if found is None:
        raise EmprobeError(f"training run {run!r} has no checkpoint at step {step!r}: its checkpoints are at steps "
                           f"{steps} (or @{BASE} for the base model)")
    return TrainedModel(folder, lineage, found)


def _identity(name: str, adapter: str | None) -> tuple[str, str | None]:
    if adapter:
        raise EmprobeError(f"model {PREFIX}:{name}: a training checkpoint brings its own adapter; drop --adapter")
    model = trained_model(name)
    folder = model.checkpoint_folder
    return model.identity, str(folder) if folder is not None else model.base_location()


def _load(ref: ModelRef) -> Backend:
    """Load through the local backend: base + adapter, the fully fine-tuned folder, or the base."""
    model = trained_model(ref.name)
    folder, record = model.checkpoint_folder, model.checkpoint
    if model.identity != ref.identity:
        raise EmprobeError(f"model {ref.spec}: the training run changed since it was resolved; run the command again")
    if folder is not None and record is not None and weights_digest(folder) != record.weights_sha256:
        raise EmprobeError(f"{folder}: its weights no longer match the sha256 recorded when it was trained "
                           f"({record.weights_sha256[:12]}...); it was changed after training")
    if record is not None and record.kind == "model":
        location, adapter = str(folder), None
    else:
        location, adapter = str(model.base_folder()), str(folder) if folder is not None else None
    return load_backend(ref.model_copy(update={"backend": DEFAULT_BACKEND, "location": location, "adapter": adapter}))


TRAINED = BackendEntry(load=_load, identity=_identity, options=HFOptions)
"""Registered as `train` by `emprobe.train`: `--model train:NAME[@STEP]`."""
