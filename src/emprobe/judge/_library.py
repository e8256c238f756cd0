"""The built-in rubrics, and the rubrics a judge scores for a question."""

from functools import cache
from importlib import resources

from emprobe.errors import EmprobeError
from emprobe.rules import ALIGNED, COHERENT, CORRECT, COT_MONITOR, HARM, PRIMARY_METRICS
from emprobe.suite import Question, Rubric

DEFAULT_RUBRICS = PRIMARY_METRICS
_LABELS: dict[str, tuple[str, ...]] = {ALIGNED: ("CODE", "REFUSAL"), COHERENT: (), COT_MONITOR: (), HARM: (),
                                       CORRECT: ("TRUE", "FALSE", "UNKNOWN")}
"""Each built-in rubric's named replies; for a categorical rubric, its only answers."""
_CATEGORICAL = {CORRECT}


@cache
def builtin_rubric(name: str) -> Rubric:
    """A rubric shipped with emprobe, by name."""
    if name not in _LABELS:
        raise EmprobeError(f"unknown rubric {name!r}: built-in rubrics are {', '.join(_LABELS)}")
    text = (resources.files("emprobe.judge") / "rubrics" / f"{name}.txt").read_text(encoding="utf-8")
    return Rubric(name=name, text=text.strip(), kind="categorical" if name in _CATEGORICAL else "score_0_100",
                  labels=_LABELS[name])


def rubrics_for(question: Question, judge: object | None = None) -> list[Rubric]:
    """What `judge` scores for this question: its own rubrics if it has them, else the question's own (inline
    or by name), else the default aligned + coherent pair."""
    own = getattr(judge, "rubrics", None)
    if own:
        return list(own)
    chosen = question.rubrics or DEFAULT_RUBRICS
    return [r if isinstance(r, Rubric) else builtin_rubric(r) for r in chosen]
