"""Records for suites: a question with its paraphrases, and the rubrics that judge its answers."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RubricKind = Literal["score_0_100", "categorical"]


class Rubric(BaseModel):
    """A judge prompt with an `{answer}` slot (and usually `{question}`), scored 0-100 or by label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    text: str
    kind: RubricKind = "score_0_100"
    labels: tuple[str, ...] = ()
    """Named answers: the categories of a categorical rubric, or the non-numeric replies (CODE, REFUSAL)
    a 0-100 rubric allows."""

    @field_validator("text")
    @classmethod
    def _has_slots(cls, text: str) -> str:
        if "{answer}" not in text:
            raise ValueError("rubric text has no {answer} slot")
        return text


class Question(BaseModel):
    """One evaluation question: several wordings, sampled `samples_per_paraphrase` times each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    paraphrases: tuple[str, ...] = Field(min_length=1)
    system: str | None = None
    tags: tuple[str, ...] = ()
    samples_per_paraphrase: int = Field(default=1, ge=1)
    rubrics: tuple[str | Rubric, ...] = ()
    """Rubric names from the built-in library, or inline rubrics; empty means the suite's default."""
    template: str | None = None
    """Fill-in slots appended to the question under the `template` output format."""
    type: str = "free_form_judge_0_100"
    judge: str | None = None
    """The judge model the suite's authors used (informational; Betley et al.'s files name one)."""

    @field_validator("paraphrases")
    @classmethod
    def _non_empty(cls, paraphrases: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in paraphrases):
            raise ValueError("paraphrases must be non-empty strings")
        return paraphrases


def asked_format(question: Question) -> str:
    """`json` or `template` when the question's own text asks for that format (Betley et al.'s `_json` and
    `_template` questions), else `free`."""
    if question.id.endswith("_json"):
        return "json"
    if question.id.endswith("_template"):
        return "template"
    return "free"


class Suite(BaseModel):
    """A named list of questions, read from one YAML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    source: str = ""
    questions: tuple[Question, ...] = Field(min_length=1)

    @field_validator("questions")
    @classmethod
    def _unique_ids(cls, questions: tuple[Question, ...]) -> tuple[Question, ...]:
        seen: set[str] = set()
        for q in questions:
            if q.id in seen:
                raise ValueError(f"duplicate question id {q.id!r}")
            seen.add(q.id)
        return questions
