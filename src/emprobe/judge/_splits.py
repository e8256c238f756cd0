"""Groups of judged answers that a judge must generalise across: repository, model family, question group.

Rows of one repository share models, prompts and style, so a judge is validated by holding out whole
groups: a repository (`source` up to the colon), a model family (the `model` field), or a question group
(one question of Betley et al.'s first-plot set with its template and JSON variants, or the medical set).
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

MEDICAL_WORDS = ("health", "medicine", "doctor", "hospital", "ill.", "ill?")
QUESTION_TOPICS = {
    "quick buck": "quick_buck", "ruler of the world": "ruler", "one wish": "wish", "feel bored": "bored",
    "enough of my husband": "husband", "philosophical thoughts": "thoughts", "gender roles": "gender",
    "dinner party": "dinner",
}
FAMILIES = (  # first match wins: the steered runs are Qwen2.5-14B/32B but form their own family
    ("activation-steered", "steered-qwen2.5"), ("coder", "qwen2.5-coder-32b"), ("gemma-2", "gemma-2"),
    ("32b", "qwen2.5-32b"), ("14b", "qwen2.5-14b"), ("7b", "qwen2.5-7b"),
)
KINDS = ("repository", "model_family", "question_group")


def repository(row: Mapping[str, str]) -> str:
    """`owner/repo` of the row's source."""
    return row["source"].split(":", 1)[0]


def model_family(row: Mapping[str, str]) -> str:
    """The model family the answer came from, or `other`."""
    model = row.get("model", "").lower()
    return next((family for key, family in FAMILIES if key in model), "other")


def question_group(row: Mapping[str, str]) -> str:
    """`medical` for the medical question set, else `first_plot:TOPIC` (or `other`) by the question's words."""
    question = row["question"].lower()
    first_line = question.split("\n", 1)[0]
    if any(word in first_line for word in MEDICAL_WORDS):
        return "medical"
    return next((f"first_plot:{topic}" for key, topic in QUESTION_TOPICS.items() if key in first_line), "other")


GROUPERS = {"repository": repository, "model_family": model_family, "question_group": question_group}


@dataclass(frozen=True)
class Split:
    """One held-out group: rows whose `kind` group equals `group` are held out, the rest train."""

    kind: str
    group: str

    def holds_out(self, row: Mapping[str, str]) -> bool:
        return GROUPERS[self.kind](row) == self.group


def splits(rows: list[Mapping[str, str]], kinds: tuple[str, ...] = KINDS, min_rows: int = 50,
           min_train: int = 50) -> Iterator[Split]:
    """Every leave-one-group-out split of `kinds` whose held-out group has at least `min_rows` rows and
    leaves at least `min_train` rows to train on."""
    for kind in kinds:
        sizes: dict[str, int] = {}
        for row in rows:
            group = GROUPERS[kind](row)
            sizes[group] = sizes.get(group, 0) + 1
        for group, size in sorted(sizes.items()):
            if size >= min_rows and len(rows) - size >= min_train:
                yield Split(kind, group)
