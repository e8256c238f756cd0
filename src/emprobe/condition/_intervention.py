"""Steering and ablation as conditions: a direction file, what to do with it at which layers, and its controls.

A condition item with `steer:` or `ablate:` expands into one condition per layer x alpha (`NAME.L16.a4`; an
ablation at layers 8 and 16 is `NAME.L8+16`), each followed by its controls (`NAME.L16.a4~random0`, `~layer8`):
`random: N` adds N conditions that use, in place of the direction, random vectors of exactly its norm
(u / |u| * |v|, u Gaussian, seeds 0..N-1); `layer: L` adds one that applies the direction at layer L instead.
Layer N is the residual stream after N decoder blocks (the output of block N), as in `emprobe activations`.
"""

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emprobe.errors import EmprobeError, first_validation_error
from emprobe.hashing import file_sha256
from emprobe.rules import Thresholds

Operation = Literal["steer", "ablate"]
CONTROL_STREAM = 0xC0
"""Random controls draw from numpy's generator seeded with (CONTROL_STREAM, seed)."""


class LayerSeparation(BaseModel):
    """How well one layer's direction separates held-out misaligned from aligned answers."""

    layer: int
    auc: float
    """Mean over folds of the AUC of held-out answers projected on the direction fitted without them."""
    norm: float
    """The norm of the direction fitted on every balanced answer."""


class Direction(BaseModel):
    """A direction in one model's residual stream at one layer, and where it came from (`emprobe direction`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["emprobe-direction/1"] = "emprobe-direction/1"
    model: str
    """The identity of the model whose activations it was computed from."""
    width: int
    layer: int
    """The residual stream after this many decoder blocks."""
    hook: str
    """The module whose output it lives in (a decoder block of `model`)."""
    position: str
    """How activations were pooled: answer-mean, prompt-mean or last."""
    operation: Operation
    """What it is meant for: added (`alpha * vector`) or projected out (along `vector / |vector|`)."""
    runs: dict[str, str]
    """The run whose misaligned answers and the run whose aligned answers it came from."""
    judge: str
    thresholds: Thresholds
    aligned_above: float
    counts: dict[str, int]
    """Misaligned and aligned answers available, and how many of each were used (balanced)."""
    separation: list[LayerSeparation]
    seed: int
    vector: list[float]

    def check_width(self, width: int) -> None:
        """One line when the model's residual stream is not as wide as this direction."""
        if width != self.width:
            raise EmprobeError(f"this direction has width {self.width} but the model's residual stream has width "
                               f"{width}: it belongs to another model ({self.model})")

    @classmethod
    def load(cls, path: Path) -> "Direction":
        """A direction file, or one line saying why it is not one."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise EmprobeError(f"{path}: direction file not found") from None
        except ValidationError as err:
            raise EmprobeError(f"{path}: not an emprobe direction file ({first_validation_error(err)})") from None


class Intervention(BaseModel):
    """What a condition does to the residual stream while the model generates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: Operation
    direction: str
    """The direction file (absolute path); its content is pinned by `sha256`."""
    sha256: str
    model: str
    """The model the direction was computed on (it may be applied to another of the same width: a base model)."""
    layers: tuple[int, ...]
    alpha: float = 0.0
    """steer: the multiple of the direction added."""
    positions: Literal["all", "generated"] = "all"
    """steer: every position (prompt included), or only the tokens the model generates."""
    control: str | None = None
    """None for the intervention itself; `random:SEED` (a random vector of the direction's norm in its place) or
    `layer` (the direction at another layer) for a control."""
    of: str | None = None
    """For a control: the name of the condition it controls."""

    def key(self) -> dict[str, Any]:
        """What changes the answers (not where the file lies): part of the generation key."""
        return self.model_dump(mode="json", exclude={"direction", "of"})

    def describe(self) -> str:
        """`steer alpha=4 at layer 16`, `ablate at layers 8,16`, with its control."""
        where = f"layer{'s' if len(self.layers) > 1 else ''} {','.join(map(str, self.layers))}"
        what = f"steer alpha={self.alpha:g} at {where}" if self.operation == "steer" else f"ablate at {where}"
        if self.operation == "steer" and self.positions == "generated":
            what += " (generated tokens)"
        return what + (f", control {self.control}" if self.control else "")

    def vector(self, direction: Direction) -> np.ndarray:
        """The vector applied: the direction's, or for a random control a Gaussian one scaled to its exact norm."""
        v = np.asarray(direction.vector, dtype=np.float64)
        if self.control and self.control.startswith("random:"):
            seed = int(self.control.split(":", 1)[1])
            u = np.random.default_rng([CONTROL_STREAM, seed]).standard_normal(len(v))
            v = u / np.linalg.norm(u) * np.linalg.norm(v)
        return v


class _Controls(BaseModel):
    model_config = ConfigDict(extra="forbid")

    random: int = Field(default=0, ge=0, le=100)
    layer: int | None = Field(default=None, ge=1)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    direction: str
    layer: int | None = Field(default=None, ge=1)
    layers: list[int] | None = None
    alpha: float | list[float] = 1.0
    positions: Literal["all", "generated"] = "all"


def expand_item(item: dict[str, Any], base: Path, where: str) -> list[dict[str, Any]]:
    """A condition item with `steer:` or `ablate:` as plain condition items with an `intervention`, controls
    after each; an item without either comes back as it is. `base` resolves relative direction paths."""
    operations = [op for op in ("steer", "ablate") if op in item]
    if not operations:
        return [item]
    if len(operations) > 1:
        raise EmprobeError(f"{where}: give steer or ablate, not both")
    operation = operations[0]
    rest = {k: v for k, v in item.items() if k not in (operation, "controls")}
    try:
        spec = _Spec.model_validate(item[operation])
    except ValidationError as err:
        raise EmprobeError(_field_error(f"{where}.{operation}", err)) from None
    try:
        controls = _Controls.model_validate(item.get("controls") or {})
    except ValidationError as err:
        raise EmprobeError(_field_error(f"{where}.controls", err)) from None
    path = (base / spec.direction).resolve()
    direction = Direction.load(path)
    pinned = {"operation": operation, "direction": str(path), "sha256": file_sha256(path), "model": direction.model}
    layers = [spec.layer] if spec.layer is not None else spec.layers or [direction.layer]
    if any(n < 1 for n in layers):
        raise EmprobeError(f"{where}.{operation}.layers: layers are numbered from 1")
    alphas = spec.alpha if isinstance(spec.alpha, list) else [spec.alpha]
    name = rest.get("name", operation)
    if operation == "ablate":
        if "alpha" in item[operation]:
            raise EmprobeError(f"{where}.ablate.alpha: ablation projects the direction out; it takes no alpha")
        settings: list[tuple[str, dict[str, Any]]] = [(f"{name}.L{'+'.join(map(str, layers))}",
                                                        {"layers": tuple(layers)})]
    else:
        settings = [(f"{name}.L{n}.a{a:g}", {"layers": (n,), "alpha": a, "positions": spec.positions})
                    for n in layers for a in alphas]
    out = []
    for label, setting in settings:
        out.append({**rest, "name": label, "intervention": {**pinned, **setting}})
        for seed in range(controls.random):
            out.append({**rest, "name": f"{label}~random{seed}",
                        "intervention": {**pinned, **setting, "control": f"random:{seed}", "of": label}})
        if controls.layer is not None:
            moved = {**setting, "layers": (controls.layer,)}
            out.append({**rest, "name": f"{label}~layer{controls.layer}",
                        "intervention": {**pinned, **moved, "control": "layer", "of": label}})
    return out


def _field_error(where: str, err: ValidationError) -> str:
    return f"{where}{'.' if err.errors()[0]['loc'] else ': '}{first_validation_error(err)}"
