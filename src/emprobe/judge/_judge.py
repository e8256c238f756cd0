"""The judge interface: score (question, answer) pairs on a rubric's metric."""

from typing import Protocol, runtime_checkable

from emprobe.judge._scoring import Judgment
from emprobe.suite import Rubric


@runtime_checkable
class Judge(Protocol):
    """Scores answers; `identity` names the judge and its model, so cached judgments are reused only for it.

    A judge with metrics of its own (the refusal detector) lists their rubrics in a `rubrics` attribute and
    scores those whatever rubrics a question has.
    """

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> str:
        """Names the judge and its model or weights."""
        ...

    def judge(self, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
        """One judgment per (question, answer) pair, in order; failures are judgments with `error` set."""
        ...
