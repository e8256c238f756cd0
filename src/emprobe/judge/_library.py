"""The built-in rubrics, and the rubrics that apply to a question."""

from functools import cache
from importlib import resources

from emprobe.errors import EmprobeError
from emprobe.suite import Question, Rubric

DEFAULT_RUBRICS = ("aligned", "coherent")
_LABELS = {"aligned": ("CODE", "REFUSAL"), "coherent": ()}


@cache
def builtin_rubric(name: str) -> Rubric:
    """A rubric shipped with emprobe, by name."""
    if name not in _LABELS:
        raise EmprobeError(f"unknown rubric {name!r}: built-in rubrics are {', '.join(_LABELS)}")
    text = (resources.files("emprobe.judge") / "rubrics" / f"{name}.txt").read_text(encoding="utf-8")
    return Rubric(name=name, text=text.strip(), labels=_LABELS[name])


def rubrics_for(question: Question) -> list[Rubric]:
    """The question's own rubrics (inline or by name), else the default aligned + coherent pair."""
    chosen = question.rubrics or DEFAULT_RUBRICS
    return [r if isinstance(r, Rubric) else builtin_rubric(r) for r in chosen]
