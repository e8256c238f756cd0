"""Decoding sweeps: a grid of temperatures, top-p and top-k values (and the system prompt on or off) expanded
into one condition per point, so generation-exploitation attacks run on the usual plan -> judge -> store path.

`--sweep temperature=0.05:1.0:0.05` (start:stop:step, both ends included), `--sweep top_p=0.5,0.9,1.0`,
`--sweep top_k=1,5,20`, `--sweep greedy` (temperature 0 alone), `--sweep system=on,off`, `--sweep
thinking=on,off` (the chat template's reasoning switch). Each point's condition is named
`BASE|t=0.5|p=0.9|k=5|sys=off|think=on` (only the swept factors appear); its sample ids depend on
what it asks, so adding a point to a sweep only adds samples.
"""

import itertools
from decimal import Decimal, InvalidOperation
from typing import Any

from emprobe.condition._condition import Condition
from emprobe.errors import EmprobeError

FACTORS = {"temperature": "t", "top_p": "p", "top_k": "k", "system": "sys", "thinking": "think"}
SWITCHES = ("system", "thinking")
"""Factors that take on and/or off."""
MAX_POINTS = 10_000


def parse_sweep(spec: str) -> tuple[str, list[Any]]:
    """`FACTOR=VALUES` (a start:stop:step range or a comma list) or `greedy` as (factor, values)."""
    if spec.strip() == "greedy":
        return "temperature", [0.0]
    factor, sep, values = spec.partition("=")
    factor = factor.strip()
    if not sep or factor not in FACTORS:
        raise EmprobeError(f"--sweep {spec!r}: write FACTOR=VALUES with FACTOR one of {', '.join(FACTORS)}, "
                           "or greedy")
    if factor in SWITCHES:
        chosen = [v.strip() for v in values.split(",")]
        if not chosen or any(v not in ("on", "off") for v in chosen):
            raise EmprobeError(f"--sweep {spec!r}: {factor} takes on and/or off")
        return factor, chosen
    try:
        numbers = _range(values) if ":" in values else [Decimal(v.strip()) for v in values.split(",")]
    except (InvalidOperation, ValueError):
        raise EmprobeError(f"--sweep {spec!r}: values are numbers, as a,b,c or start:stop:step") from None
    if factor == "top_k":
        if any(n != n.to_integral_value() or n < 0 for n in numbers):
            raise EmprobeError(f"--sweep {spec!r}: top_k takes whole numbers >= 0")
        return factor, [int(n) for n in numbers]
    return factor, [float(n) for n in numbers]


def _range(text: str) -> list[Decimal]:
    """start:stop:step with both ends included, in decimal arithmetic (0.05:1.0:0.05 gives 20 points)."""
    start, stop, step = (Decimal(part.strip()) for part in text.split(":"))
    if step <= 0 or stop < start:
        raise ValueError("empty range")
    count = int((stop - start) / step) + 1
    if count > MAX_POINTS:
        raise ValueError("too many points")
    return [start + i * step for i in range(count)]


def expand(conditions: list[Condition], sweeps: list[str]) -> list[Condition]:
    """Every condition at every point of the grid the sweeps span (the conditions unchanged without sweeps)."""
    if not sweeps:
        return conditions
    grid: dict[str, list[Any]] = {}
    for spec in sweeps:
        factor, values = parse_sweep(spec)
        grid.setdefault(factor, [])
        grid[factor].extend(v for v in values if v not in grid[factor])
    points = list(itertools.product(*grid.values()))
    if len(points) * len(conditions) > MAX_POINTS:
        raise EmprobeError(f"--sweep: {len(points) * len(conditions)} conditions is more than {MAX_POINTS}")
    out = []
    for condition in conditions:
        for point in points:
            out.append(_at(condition, dict(zip(grid, point, strict=True))))
    return out


def _at(condition: Condition, point: dict[str, Any]) -> Condition:
    decoding = {k: v for k, v in point.items() if k not in SWITCHES}
    label = "|".join(f"{FACTORS[k]}={_shown(v)}" for k, v in point.items())
    update: dict[str, Any] = {"name": f"{condition.name}|{label}",
                              "decoding": {**condition.decoding.model_dump(), **decoding}}
    if point.get("system") == "off":
        update["drop_system"] = True
    if "thinking" in point:
        update["thinking"] = point["thinking"] == "on"
    try:
        return Condition.model_validate({**condition.model_dump(), **update})
    except ValueError as err:
        raise EmprobeError(f"--sweep: point {label} is not a valid decoding: {err}".splitlines()[0]) from None


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
