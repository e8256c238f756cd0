"""Judges by name: `builtin`, `refusal`, `rubric:MODEL`; plugins add more under the entry-point group
`emprobe.judges`. A judge spec is `PREFIX` or `PREFIX:ARGUMENT`; the factory registered for PREFIX builds it.
"""

from collections.abc import Callable, Iterable
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
from emprobe.suite import Rubric


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


@dataclass(frozen=True)
class JudgeEntry:
    """How to build a judge, and which rubrics (by name) it can score: None for any."""

    factory: JudgeFactory
    metrics: tuple[str, ...] | None = None
    screens: bool = False
    """Whether its judgments carry P(misaligned) (`probabilities["misaligned"]`), so it can screen a cascade."""


JUDGES: Registry[JudgeEntry | JudgeFactory] = Registry("emprobe.judges", "judge")
"""Entries; a plugin may register a bare factory, which is taken to score any rubric."""


def register_judge(prefix: str, factory: JudgeFactory, metrics: tuple[str, ...] | None = None,
                   screens: bool = False) -> None:
    """Make judge specs `PREFIX` and `PREFIX:ARGUMENT` build through `factory(argument, context)`."""
    JUDGES.register(prefix, JudgeEntry(factory, metrics, screens))


def _entry(spec: str) -> JudgeEntry:
    found = JUDGES.require(spec.partition(":")[0], shown=repr(spec))
    return found if isinstance(found, JudgeEntry) else JudgeEntry(found)


def check_judge(spec: str, rubrics: Iterable[tuple[str, Rubric]] = ()) -> None:
    """Fail with one line, before any work, when no judge is registered for `spec` or it cannot score one of
    `rubrics` ((where, rubric) pairs); loads nothing."""
    metrics = _entry(spec).metrics
    if metrics is None:
        return
    for where, rubric in rubrics:
        if rubric.name not in metrics:
            raise EmprobeError(f"judge {spec!r} cannot score rubric {rubric.name!r} of {where}: it scores only "
                               f"{' and '.join(metrics)}; judge it with --judge rubric:MODEL")


def check_screen(spec: str) -> None:
    """Fail with one line, before any work, unless `spec` names a judge that gives P(misaligned)."""
    if not _entry(spec).screens:
        screening = ", ".join(p for p in JUDGES if _entry(p).screens)
        raise EmprobeError(f"--confirm needs a screening judge that gives P(misaligned) as the first --judge "
                           f"({screening}); {spec!r} gives none")


def load_judge(spec: str, context: JudgeContext | None = None) -> Judge:
    """Build the judge `spec` names."""
    return _entry(spec).factory(spec.partition(":")[2], context or JudgeContext())


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


register_judge("builtin", _builtin, metrics=BuiltinJudge.metrics, screens=True)
register_judge("refusal", _refusal)
register_judge("rubric", _rubric)
