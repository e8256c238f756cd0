"""Groups of judged answers that a judge must generalise across: repository, model family, question group.

Rows of one repository share models, prompts and style, so a judge is validated by holding out whole
groups: a repository (`source` up to the colon), a model family (the `model` field), or a question group
(one question of Betley et al.'s first-plot set with its template and JSON variants, or the medical set).
"""

import hashlib
from collections.abc import Mapping

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


def calibration_cell(row: Mapping[str, str]) -> bool:
    """Whether the row's (model family, question group) cell is one of the quarter, chosen by hash, that the
    built-in judge's training holds out to fit its calibration and threshold on."""
    cell = f"{model_family(row)}|{question_group(row)}"
    return int(hashlib.sha256(cell.encode()).hexdigest(), 16) % 4 == 0
