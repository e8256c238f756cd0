"""Steering and ablation on a local model: forward hooks on decoder blocks that change the residual stream.

Layer N is the output of decoder block N. Steering adds `alpha * v` there (at every position, or only at the
tokens being generated); ablation replaces `h` by `h - (h . r) r` with `r = v / |v|` at each listed layer. Blocks
may return a tensor (transformers 5) or a tuple whose first item is it.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from emprobe.condition import Direction, Intervention
from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256


def decoder_layers(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's decoder blocks and their module path: the module list as long as the model has layers."""
    config: Any = model.config
    count = config.get_text_config().num_hidden_layers
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return name, module
    raise EmprobeError(f"cannot find the {count} decoder layers of this {type(model).__name__}")


def _replace(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class Intervener:
    """Hooks that apply one intervention while they are registered (`with Intervener(...)`); `generating` tells
    the steering hooks whether the current forward pass produces new tokens (set by the generation loop)."""

    def __init__(self, model: torch.nn.Module, intervention: Intervention):
        path = Path(intervention.direction)
        direction = Direction.load(path)
        if file_sha256(path) != intervention.sha256:
            raise EmprobeError(f"{path}: the direction file changed since the run was planned; plan a new run (or "
                               "restore the file)")
        _, self.blocks = decoder_layers(model)
        config: Any = model.config
        direction.check_width(int(config.get_text_config().hidden_size))
        bad = [n for n in intervention.layers if not 1 <= n <= len(self.blocks)]
        if bad:
            raise EmprobeError(f"{intervention.describe()}: this model has layers 1..{len(self.blocks)}")
        parameter = next(model.parameters())
        self.vector = torch.tensor(intervention.vector(direction), dtype=parameter.dtype, device=parameter.device)
        self.intervention = intervention
        self.generating = False
        self._handles: list[Any] = []

    def _hook(self) -> Callable[..., Any]:
        iv = self.intervention
        if iv.operation == "steer":
            shift = iv.alpha * self.vector

            def steer(module: torch.nn.Module, args: Any, output: Any) -> Any:
                if iv.positions == "generated" and not self.generating:
                    return output
                hidden = output[0] if isinstance(output, tuple) else output
                return _replace(output, hidden + shift)

            return steer
        unit = self.vector / self.vector.norm()

        def ablate(module: torch.nn.Module, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            return _replace(output, hidden - (hidden @ unit)[..., None] * unit)

        return ablate

    def __enter__(self) -> "Intervener":
        self._handles = [self.blocks[n - 1].register_forward_hook(self._hook()) for n in self.intervention.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
