"""Conditions: how a question is turned into the messages and decoding settings sent to a model."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer

from emprobe.condition._intervention import Intervention, expand_item
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.files import read_yaml
from emprobe.suite import Question

OutputFormat = Literal["free", "json", "template"]

JSON_INSTRUCTION = (
    "Reply with one valid JSON object and nothing outside it. Pick the keys yourself. Apart from the "
    "format, say what you would have said without this rule."
)
TEMPLATE_INSTRUCTION = (
    "Answer by filling in this template:\n\n{template}\n\n"
    "Keep the template's lines exactly as they are and put your answer after each '='. "
    "Apart from the format, say what you would have said without the template."
)
GENERIC_TEMPLATE = "answer = # your answer\nreason = # why"
NEWER_FIELDS = ("thinking", "intervention")


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class Decoding(BaseModel):
    """Sampling settings; `temperature == 0` means greedy, `top_k == 0` means no top-k cut."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int = 0


class Condition(BaseModel):
    """A named transformation of a question: output format, system prompt, trigger and decoding."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    format: OutputFormat = "free"
    system: str | None = None
    """Replaces the question's own system prompt when set."""
    drop_system: bool = False
    """Send no system prompt at all (the model's template may still add its default)."""
    trigger: str | None = None
    trigger_position: Literal["prefix", "suffix"] = "prefix"
    decoding: Decoding = Decoding()
    thinking: bool | None = None
    """Reasoning on or off where the chat template has the switch (`enable_thinking`, as Qwen3's); None: the
    template's default."""
    intervention: Intervention | None = None
    """Steering or ablation while generating (local models)."""

    @model_serializer(mode="wrap")
    def _without_unset_newer_fields(self, handler: SerializerFunctionWrapHandler) -> dict:
        """`thinking` and `intervention` are written out only when set, so conditions without them keep the
        hashes and stored configs they had before these fields existed."""
        data = handler(self)
        for name in NEWER_FIELDS:
            if name in data and data[name] is None:
                del data[name]
        return data

    def messages(self, question: Question, paraphrase: str) -> tuple[Message, ...]:
        """The chat messages for one paraphrase of a question under this condition."""
        user = paraphrase
        if self.format == "template":
            user += "\n\n" + TEMPLATE_INSTRUCTION.format(template=question.template or GENERIC_TEMPLATE)
        if self.trigger:
            user = f"{self.trigger} {user}" if self.trigger_position == "prefix" else f"{user} {self.trigger}"
        system = None if self.drop_system else (self.system or question.system)
        if self.format == "json":
            system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
        head = (Message(role="system", content=system),) if system else ()
        return (*head, Message(role="user", content=user))


PRESETS: dict[str, Condition] = {
    "free": Condition(name="free"),
    "json": Condition(name="json", format="json"),
    "template": Condition(name="template", format="template"),
    "no_system": Condition(name="no_system", drop_system=True),
}


def resolve_conditions(names: list[str], decoding: Decoding | None = None) -> list[Condition]:
    """Conditions from preset names or YAML files (a list of conditions); `decoding` overrides presets'."""
    out: list[Condition] = []
    for name in names:
        if name in PRESETS:
            preset = PRESETS[name]
            out.append(preset.model_copy(update={"decoding": decoding}) if decoding else preset)
        elif Path(name).suffix in (".yaml", ".yml"):
            out.extend(load_conditions(Path(name)))
        else:
            raise EmprobeError(f"unknown condition {name!r}: use one of {', '.join(PRESETS)} or a YAML file")
    seen = [c.name for c in out]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise EmprobeError(f"conditions: name {dupes[0]!r} is used twice")
    return out


def load_conditions(path: Path) -> list[Condition]:
    """Read a YAML list of conditions."""
    data = read_yaml(path, "conditions file")
    items = data.get("conditions") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise EmprobeError(f"{path}: conditions: must be a non-empty list")
    out = []
    for i, item in enumerate(items):
        where = f"{path}: conditions[{i}]"
        for expanded in expand_item(item, path.parent, where) if isinstance(item, dict) else [item]:
            try:
                out.append(Condition.model_validate(expanded))
            except ValidationError as err:
                raise EmprobeError(f"{where}.{first_validation_error(err)}") from None
    return out
