"""Records for suites: a question with its paraphrases, and the rubrics that judge its answers."""

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

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
        if ("{answer}" in text) == ("{reasoning}" in text):
            raise ValueError("rubric text needs one {answer} slot or one {reasoning} slot (not both)")
        return text

    @property
    def reads_reasoning(self) -> bool:
        """A rubric with a `{reasoning}` slot scores the model's reasoning (`--think`) instead of its answer."""
        return "{reasoning}" in self.text

    def as_answer_rubric(self) -> "Rubric":
        """The rubric as a judge fills it: the text it scores, reasoning or answer, goes in the `{answer}` slot."""
        return self.model_copy(update={"text": self.text.replace("{reasoning}", "{answer}")}) \
            if self.reads_reasoning else self


TURN_MARK = "#"
"""Turn k >= 2 of question Q is stored as question `Q#k`, so every summary has one row per turn."""


class Turn(BaseModel):
    """The user's next message in a scripted conversation, fixed or chosen by the previous answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field(min_length=1)
    """Said next; with `when`, only if the previous answer contains one of its phrases (any case)."""
    when: tuple[str, ...] = ()
    otherwise: str | None = Field(default=None, min_length=1)
    """Said instead when `when` does not match; without it the conversation ends there."""

    def next_message(self, previous_answer: str) -> str | None:
        """What the user says after `previous_answer`, or None when the script ends."""
        if not self.when or any(phrase.lower() in previous_answer.lower() for phrase in self.when):
            return self.user
        return self.otherwise


class Question(BaseModel):
    """One evaluation question: several wordings, sampled `samples_per_paraphrase` times each; with `turns`, a
    scripted conversation whose first user message is the paraphrase."""

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
    turns: tuple[Turn, ...] = ()
    """The user's messages after the first answer, one per turn (turn 2, 3, ...)."""
    judge_turns: tuple[int, ...] = ()
    """The turns (from 1) whose answers are judged; empty: every turn."""
    pairs_with: str | None = None
    """Another question of the suite that asks the same thing another way (short vs long): the report measures
    how often the two agree."""

    @model_serializer(mode="wrap")
    def _without_unused_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Questions without a script or a pair dump (and hash) as they did before those existed: run ids stay put."""
        data = handler(self)
        if not self.turns:
            data.pop("turns", None)
        if not self.judge_turns:
            data.pop("judge_turns", None)
        if self.pairs_with is None:
            data.pop("pairs_with", None)
        return data

    @field_validator("id")
    @classmethod
    def _no_turn_mark(cls, value: str) -> str:
        if TURN_MARK in value:
            raise ValueError(f"question ids may not contain {TURN_MARK!r} (it marks a scripted turn)")
        return value

    @model_validator(mode="after")
    def _judged_turns_exist(self) -> "Question":
        turns = len(self.turns) + 1
        if self.judge_turns and not self.turns:
            raise ValueError("judge_turns: only a scripted conversation (turns) has turns to choose")
        bad = [t for t in self.judge_turns if not 1 <= t <= turns]
        if bad:
            raise ValueError(f"judge_turns: turn {bad[0]} does not exist; this script has turns 1 to {turns}")
        if len(set(self.judge_turns)) != len(self.judge_turns):
            raise ValueError("judge_turns: a turn is named twice")
        return self

    def judged(self, turn: int) -> bool:
        """Whether answers at `turn` (from 1) are judged."""
        return not self.judge_turns or turn in self.judge_turns

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
        seen: dict[str, Question] = {}
        for q in questions:
            if q.id in seen:
                raise ValueError(f"duplicate question id {q.id!r}")
            seen[q.id] = q
        for q in questions:
            if q.pairs_with is not None:
                check_pair(q, seen.get(q.pairs_with))
        return questions


def check_pair(question: Question, reference: Question | None) -> None:
    """Fail unless `question` can pair with `reference`: another unscripted question whose paraphrases line up
    with its own one by one (or either has one paraphrase)."""
    where = f"question {question.id!r}: pairs_with"
    if reference is None:
        raise ValueError(f"{where}: no question {question.pairs_with!r} in this suite")
    if reference.id == question.id:
        raise ValueError(f"{where}: a question cannot pair with itself")
    if question.turns or reference.turns:
        raise ValueError(f"{where}: scripted conversations (turns) cannot be paired")
    counts = len(question.paraphrases), len(reference.paraphrases)
    if 1 not in counts and counts[0] != counts[1]:
        raise ValueError(f"{where}: {counts[0]} paraphrases against {counts[1]} of {reference.id!r}; paraphrases "
                         "pair one by one, so give both the same number (or one of them a single paraphrase)")
