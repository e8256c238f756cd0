"""Paired framings: every condition asked under two system-prompt framings of the same request (e.g. told the
conversation is monitored and used for training, or private), so the compliance gap between them can be tested.

`--framing monitoring` (built in: `emprobe/condition/framings/monitoring.yaml`) or `--framing FILE.yaml`, a list
of exactly two entries with `name` and `system`. Condition C becomes `C@A` and `C@B`; the framing's text goes
before C's own system prompt (a question's own system prompt is replaced, as any condition's `system` does).
"""

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emprobe.condition._condition import Condition
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.files import read_yaml

FRAMINGS_DIR = resources.files("emprobe.condition") / "framings"


class Framing(BaseModel):
    """One side of a pair: its name and the system text that frames the request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    system: str = Field(min_length=1)


def builtin_framings() -> dict[str, Path]:
    return {Path(p.name).stem: Path(str(p)) for p in FRAMINGS_DIR.iterdir() if p.name.endswith(".yaml")}


def load_framing(name_or_path: str) -> tuple[Framing, Framing]:
    """The pair a built-in name or a YAML file describes."""
    path = builtin_framings().get(name_or_path) or Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        known = ", ".join(sorted(builtin_framings()))
        raise EmprobeError(f"unknown framing {name_or_path!r}: use one of {known} or a YAML file")
    data = read_yaml(path, "framing file")
    if not isinstance(data, list) or len(data) != 2:
        raise EmprobeError(f"{path}: a framing file is a list of exactly two entries with name and system")
    pair = []
    for i, item in enumerate(data):
        try:
            pair.append(Framing.model_validate(item))
        except ValidationError as err:
            raise EmprobeError(f"{path}: entry {i}: {first_validation_error(err)}") from None
    if pair[0].name == pair[1].name:
        raise EmprobeError(f"{path}: the two framings need different names (both {pair[0].name!r})")
    return pair[0], pair[1]


def framed(conditions: list[Condition], pair: tuple[Framing, Framing] | None) -> list[Condition]:
    """Each condition under both framings (the conditions unchanged without a pair)."""
    if pair is None:
        return conditions
    out = []
    for condition in conditions:
        if condition.drop_system:
            raise EmprobeError(f"--framing: condition {condition.name!r} sends no system prompt, which the framing is")
        for side in pair:
            system = f"{side.system}\n\n{condition.system}" if condition.system else side.system
            out.append(condition.model_copy(update={"name": f"{condition.name}@{side.name}", "system": system}))
    return out
