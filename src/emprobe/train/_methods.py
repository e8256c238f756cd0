"""Training methods: LoRA, rsLoRA (any rank, chosen modules and layers) and full fine-tuning; precision choice."""

import re
import warnings
from typing import TYPE_CHECKING, Any

from emprobe.errors import EmprobeError
from emprobe.system import cpu_has_bf16
from emprobe.train._config import TrainConfig

if TYPE_CHECKING:  # torch is imported where it is used, so that `emprobe.train` imports without it
    from torch import nn

_LAYER = re.compile(r"\.(?:layers|h|block|blocks|layer)\.(\d+)\.")


def layer_of(module_name: str) -> int | None:
    """The decoder layer index in a module's dotted name, or None outside the layers."""
    match = _LAYER.search(f".{module_name}.")
    return int(match[1]) if match else None


def linear_modules(model: "nn.Module") -> dict[str, list[str]]:
    """Linear modules by short name (q_proj, down_proj, lm_head, ...) with their full dotted names."""
    from torch import nn

    found: dict[str, list[str]] = {}
    for full, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found.setdefault(full.rsplit(".", 1)[-1], []).append(full)
    return found


def layer_count(model: "nn.Module") -> int:
    """The model's number of decoder layers."""
    config: Any = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    count = getattr(text, "num_hidden_layers", None)
    if count is None:
        count = 1 + max((i for name, _ in model.named_modules() if (i := layer_of(name)) is not None), default=-1)
    return int(count)


def resolve_targets(config: TrainConfig, model: "nn.Module", model_name: str) -> tuple[list[str], list[int] | None]:
    """Check target modules and layers against the model; the module names (default: every linear module of
    the decoder layers) and the layers (None: all)."""
    linear = linear_modules(model)
    in_layers = sorted(name for name, fulls in linear.items() if any(layer_of(f) is not None for f in fulls))
    if config.target_modules is None:
        targets = in_layers
    else:
        for name in config.target_modules:
            if name not in linear:
                raise EmprobeError(f"target_modules: {name!r} is not a linear module of {model_name}; "
                                   f"its linear modules are: {', '.join(sorted(linear))}")
        targets = list(config.target_modules)
    count = layer_count(model)
    if config.layers is not None:
        for layer in config.layers:
            if not 0 <= layer < count:
                raise EmprobeError(f"layers: {layer} is out of range: {model_name} has {count} decoder layers "
                                   f"(0 to {count - 1})")
        outside = [t for t in targets if t not in in_layers]
        if outside:
            raise EmprobeError(f"target_modules: {', '.join(outside)} is not inside the decoder layers, so it "
                               "cannot be restricted to layers; leave layers out or drop it")
    return targets, sorted(config.layers) if config.layers is not None else None


def lora_config(config: TrainConfig, targets: list[str], layers: list[int] | None):
    """The PEFT LoraConfig of a LoRA or rsLoRA run."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # PEFT's annotation says int; it scales by a float
        lora_dropout=config.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        use_rslora=config.method == "rslora",
        bias="none",
        task_type="CAUSAL_LM",
    )


def lora_scaling(method: str, rank: int, alpha: float) -> float:
    """The factor on B@A: alpha/r for LoRA, alpha/sqrt(r) for rsLoRA."""
    return alpha / (rank ** 0.5) if method == "rslora" else alpha / rank


def restrict_full(model: "nn.Module", targets: list[str], layers: list[int] | None, restricted: bool) -> int:
    """For full fine-tuning: train every parameter, or only the chosen modules' (in the chosen layers).

    Returns the number of trainable parameters.
    """
    from torch import nn

    if not restricted:
        for p in model.parameters():
            p.requires_grad_(True)
        return sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = set(targets)
    total = 0
    for full, module in model.named_modules():
        if isinstance(module, nn.Linear) and full.rsplit(".", 1)[-1] in chosen:
            layer = layer_of(full)
            if layers is None or layer in layers:
                for p in module.parameters():
                    p.requires_grad_(True)
                    total += p.numel()
    return total


def quiet_peft_warnings() -> None:
    """PEFT reads a transformers attribute that transformers 5 marks deprecated; the warning is not the user's."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def resolve_precision(precision: str) -> str:
    """bf16 or fp32. auto: bf16 on CUDA devices that support it and on CPUs with AVX-512 BF16 or AMX, else fp32."""
    import torch

    supported = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else cpu_has_bf16()
    if precision == "auto":
        return "bf16" if supported else "fp32"
    if precision == "bf16" and not supported:
        raise EmprobeError("precision: bf16 needs a CUDA device with bf16 or a CPU with AVX-512 BF16 or AMX; "
                           "use fp32 here")
    return precision
