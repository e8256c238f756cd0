"""The configuration of a run: what to ask, which model answers, who judges, and the summary thresholds."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emprobe.condition import Condition
from emprobe.hashing import stable_hash
from emprobe.rules import Thresholds
from emprobe.suite import Suite

DEFAULT_MODEL = "smollm2-135m"


class RunConfig(BaseModel):
    """Everything that defines a run; stored whole with the run so every number can be recomputed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    model: str = DEFAULT_MODEL
    adapter: str | None = None
    backend_options: dict[str, Any] = {}
    """Options of the model's backend (`--backend-option KEY=VALUE`), checked by the backend."""
    suites: tuple[Suite, ...] = Field(min_length=1)
    conditions: tuple[Condition, ...] = Field(min_length=1)
    samples: int | None = Field(default=None, ge=1)
    """Samples per paraphrase; None keeps each question's own samples_per_paraphrase."""
    judges: tuple[str, ...] = ("builtin",)
    sweeps: tuple[str, ...] = ()
    """The `--sweep` specs whose grid expanded the conditions (a decoding attack: its success is reported)."""
    triggers: tuple[str, ...] = ()
    """The candidate triggers (`--trigger`) every untriggered condition is also asked with (their gaps are reported)."""
    framing: tuple[str, str] | None = None
    """The two framings (`--framing`) every condition was asked under, A then B (their compliance gap is reported)."""
    think: tuple[str, str] | None = None
    """The delimiters of the model's reasoning (`--think`): judges score the answer after it, and rubrics with a
    `{reasoning}` slot (cot_monitor) score the reasoning."""
    thresholds: Thresholds = Thresholds()

    @model_validator(mode="before")
    @classmethod
    def _stored_before_backend_options(cls, data: Any) -> Any:
        """Configs stored before `backend_options` had `batch_size` and `dtype` fields of their own; values other
        than those defaults become backend options."""
        if isinstance(data, dict) and ("batch_size" in data or "dtype" in data):
            data = dict(data)
            old = {k: data.pop(k) for k in ("batch_size", "dtype") if k in data}
            moved = {k: v for k, v in old.items() if v != {"batch_size": 64, "dtype": "auto"}[k]}
            data["backend_options"] = {**moved, **data.get("backend_options", {})}
        return data

    def run_id(self, model_identity: str) -> str:
        """Same model, suites and conditions give the same run, so rerunning resumes or extends it."""
        return stable_hash(model_identity, self.suites, self.conditions, length=12)
