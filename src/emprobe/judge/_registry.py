"""Judges by name: `builtin`, `refusal`, `rubric:MODEL`; plugins add more under the entry-point group
`emprobe.judges`. A judge spec is `PREFIX` or `PREFIX:ARGUMENT`; the factory registered for PREFIX builds it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from emprobe.errors import EmprobeError
from emprobe.judge._builtin import BuiltinJudge
from emprobe.judge._first_token import FirstTokenJudge
from emprobe.judge._judge import Judge
from emprobe.judge._refusal import RefusalDetector
from emprobe.judge._rubric import RubricJudge
from emprobe.model import Backend, FirstTokenBackend, ScoringBackend, load_backend, resolve
from emprobe.plugins import Registry
from emprobe.rules import Thresholds


def _load_model(spec: str) -> Backend:
    return load_backend(resolve(spec))


@dataclass
class JudgeContext:
    """What a judge factory may use: the run's thresholds, its model, and a loader of model backends."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    model: str | None = None
    """The run's model spec: what `rubric:` without a model judges with."""
    backend: Callable[[str], Backend] = _load_model
    """Loads a model spec; the runner passes its own, so the run's model is loaded once for both uses."""


JudgeFactory = Callable[[str, JudgeContext], Judge]
"""(the spec's argument after `PREFIX:`, context) -> a judge."""
JUDGES: Registry[JudgeFactory] = Registry("emprobe.judges", "judge")


def register_judge(prefix: str, factory: JudgeFactory) -> None:
    """Make judge specs `PREFIX` and `PREFIX:ARGUMENT` build through `factory(argument, context)`."""
    JUDGES.register(prefix, factory)


def check_judge(spec: str) -> None:
    """Fail with one line when no judge is registered for `spec`'s prefix; loads nothing."""
    JUDGES.require(spec.partition(":")[0], shown=repr(spec))


def load_judge(spec: str, context: JudgeContext | None = None) -> Judge:
    """Build the judge `spec` names."""
    prefix, _, argument = spec.partition(":")
    return JUDGES.require(prefix, shown=repr(spec))(argument, context or JudgeContext())


def _no_argument(spec: str, argument: str) -> None:
    if argument:
        raise EmprobeError(f"judge {spec!r} takes no argument (got {argument!r})")


def _builtin(argument: str, context: JudgeContext) -> Judge:
    _no_argument("builtin", argument)
    return BuiltinJudge(thresholds=context.thresholds)


def _refusal(argument: str, context: JudgeContext) -> Judge:
    _no_argument("refusal", argument)
    return RefusalDetector()


def _rubric(argument: str, context: JudgeContext) -> Judge:
    """The rubric judge on a local model (next-token distribution) or a served one (first-token logprobs)."""
    spec = f"rubric:{argument}"
    model = argument or context.model
    if not model:
        raise EmprobeError(f"judge {spec!r}: name the judge model, e.g. rubric:smollm2-135m")
    backend = context.backend(model)
    if isinstance(backend, ScoringBackend):
        return RubricJudge(backend, name=spec)
    if isinstance(backend, FirstTokenBackend):
        return FirstTokenJudge(backend, name=spec)
    raise EmprobeError(f"judge {spec!r}: backend {type(backend).__name__} cannot read next-token probabilities")


register_judge("builtin", _builtin)
register_judge("refusal", _refusal)
register_judge("rubric", _rubric)
