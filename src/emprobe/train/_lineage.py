"""Lineage records of a training run, the content hash of saved weights, and weight-update diagnostics."""

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from emprobe.train._config import TrainConfig
from emprobe.train._data import DataFile, MixRecord
from emprobe.train._mask import MaskStats
from emprobe.train._methods import layer_of, lora_scaling

LINEAGE_FILE = "lineage.json"
CHECKPOINT_FILE = "emprobe-checkpoint.json"


class LossPoint(BaseModel):
    """One logged training step."""

    model_config = ConfigDict(frozen=True)

    step: int
    epoch: float
    loss: float
    learning_rate: float | None = None
    grad_norm: float | None = None
    tokens: int | None = None
    """Non-padding tokens seen since training began (as TRL counts them)."""


class UpdateNorm(BaseModel):
    """Frobenius norm of one module's weight update: LoRA's B@A times its scaling, or W - W0 for full fine-tuning."""

    model_config = ConfigDict(frozen=True)

    module: str
    """Dotted module name, e.g. model.layers.12.mlp.down_proj."""
    name: str
    """Short name, e.g. down_proj."""
    layer: int | None
    norm: float


class CheckpointRecord(BaseModel):
    """A saved adapter (or model) at one training step."""

    model_config = ConfigDict(frozen=True)

    step: int
    epoch: float
    path: str
    kind: Literal["adapter", "model"]
    weights_sha256: str
    """Hash of the saved tensors' names, dtypes, shapes and values: the checkpoint's content, not its path."""
    validation_loss: float | None
    train_loss: float | None
    """The last logged training loss at or before this step."""
    norms: tuple[UpdateNorm, ...] = ()


class TrainLineage(BaseModel):
    """Everything needed to know what was trained and reproduce it; written as lineage.json in the output folder."""

    model_config = ConfigDict(frozen=True)

    name: str
    status: Literal["running", "complete"]
    output: str
    config_hash: str
    config: TrainConfig
    given: dict[str, Any]
    """What the user gave, verbatim: the YAML text (if any) and the command-line options set."""
    base_model: str
    base_identity: str
    base_path: str
    data: tuple[DataFile, ...]
    mix: MixRecord
    train_tokens: MaskStats
    validation_tokens: MaskStats | None
    method: str
    target_modules: tuple[str, ...]
    layers: tuple[int, ...] | None
    trainable_parameters: int
    total_parameters: int
    precision: str
    device: str
    max_steps: int
    versions: dict[str, str]
    losses: tuple[LossPoint, ...] = ()
    checkpoints: tuple[CheckpointRecord, ...] = ()
    resumed_at: tuple[int, ...] = ()
    """Steps at which an interrupted run was resumed."""
    train_seconds: float = 0.0
    """Wall time inside the trainer, summed over sessions."""

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented form
    @property
    def final(self) -> CheckpointRecord | None:
        """The checkpoint of the last step, once training is complete."""
        if self.status != "complete" or not self.checkpoints:
            return None
        return self.checkpoints[-1]

    def write(self, folder: Path) -> Path:
        path = Path(folder) / LINEAGE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)
        return path


def read_lineage(folder: str | Path) -> TrainLineage:
    """The lineage record of a training output folder."""
    return TrainLineage.model_validate_json((Path(folder) / LINEAGE_FILE).read_text())


def library_versions() -> dict[str, str]:
    """Versions of what training depends on."""
    out = {"python": platform.python_version()}
    for package in ("emprobe", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding a checkpoint's weights (adapter or model)."""
    adapter = sorted(folder.glob("adapter_model*.safetensors"))
    return adapter or sorted(folder.glob("model*.safetensors"))


def weights_digest(folder: str | Path) -> str:
    """sha256 over the saved tensors (sorted names, dtype, shape, bytes), so equal weights hash equal."""
    import torch
    from safetensors import safe_open

    files = weight_files(Path(folder))
    if not files:
        raise FileNotFoundError(f"{folder}: no adapter_model or model safetensors file")
    h = hashlib.sha256()
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in sorted(f.keys()):
                tensor = f.get_tensor(key).contiguous()
                h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
                h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def lora_update_norms(adapter: str | Path) -> list[UpdateNorm]:
    """||B@A * scaling||_F of each LoRA module of a saved PEFT adapter, per layer and module."""
    import torch
    from safetensors.torch import load_file

    folder = Path(adapter)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for file in weight_files(folder):
        tensors.update(load_file(str(file)))
    method = "rslora" if cfg.get("use_rslora") else "lora"
    out = []
    for key in sorted(tensors):
        if not key.endswith("lora_A.weight"):
            continue
        stem = key[: -len(".lora_A.weight")]
        a = tensors[key].double()
        b = tensors[f"{stem}.lora_B.weight"].double()
        module = stem.removeprefix("base_model.model.")
        short = module.rsplit(".", 1)[-1]
        rank = a.shape[0]
        alpha = _pattern_value(cfg.get("alpha_pattern") or {}, module, cfg.get("lora_alpha", rank))
        # ||B A||_F^2 = trace((B^T B)(A A^T)): r x r matrices instead of the full update
        squared = torch.trace((b.T @ b) @ (a @ a.T)).clamp(min=0).item()
        out.append(UpdateNorm(module=module, name=short, layer=layer_of(module),
                              norm=squared ** 0.5 * lora_scaling(method, rank, float(alpha))))
    return out


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    for pattern, value in patterns.items():
        if module == pattern or module.endswith(f".{pattern}"):
            return value
    return default


def weight_delta_norms(base: str | Path, model: str | Path) -> list[UpdateNorm]:
    """||W - W0||_F of each 2-D weight of a fully fine-tuned checkpoint against its base, per layer and module."""
    from safetensors import safe_open

    base_tensors: dict[str, Path] = {}
    for file in weight_files(Path(base)):
        with safe_open(str(file), framework="pt") as f:
            base_tensors.update({k: file for k in f.keys()})  # noqa: SIM118 (safe_open has no __iter__)
    out = []
    for file in weight_files(Path(model)):
        with safe_open(str(file), framework="pt") as f:
            for key in sorted(f.keys()):
                if key not in base_tensors or not key.endswith(".weight"):
                    continue
                new = f.get_tensor(key)
                if new.dim() != 2:
                    continue
                with safe_open(str(base_tensors[key]), framework="pt") as g:
                    old = g.get_tensor(key)
                module = key[: -len(".weight")]
                delta = (new.double() - old.double()).norm().item()
                out.append(UpdateNorm(module=module, name=module.rsplit(".", 1)[-1], layer=layer_of(module),
                                      norm=delta))
    return out


def checkpoint_record(folder: Path) -> CheckpointRecord | None:
    """The record emprobe wrote into a finished checkpoint folder, or None if it is incomplete."""
    marker = folder / CHECKPOINT_FILE
    if not marker.is_file():
        return None
    try:
        return CheckpointRecord.model_validate_json(marker.read_text())
    except ValueError:
        return None
