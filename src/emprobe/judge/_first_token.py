"""The rubric judge on a served model: scores from the top logprobs of its reply's first token (GPT-4o style).

Tokens that read as integers 0-100 (spaces stripped) are numbers; a token that is a prefix of one of the
rubric's labels (case-sensitive) counts for that label. Servers without logprobs can still judge categorical
rubrics, from the label the reply starts with.
"""

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.judge._scoring import Judgment, categorical, score_0_100
from emprobe.model import FirstTokenBackend, FirstTokenReply, status_of
from emprobe.suite import Rubric

TOP_LOGPROBS = 20
LABEL_TOKENS = 8
"""Reply length read for a categorical label when the server gives no logprobs."""


class FirstTokenJudge:
    """Reads the judge model's first-token candidates through the backend's public `first_tokens` call."""

    def __init__(self, backend: FirstTokenBackend, name: str):
        self.backend = backend
        self.name = name
        self.identity = f"rubric-http:{backend.identity}:top{TOP_LOGPROBS}:first-token"
        self.text_only = False
        """Set once the server is found to return no logprobs."""

    def status(self) -> str:
        return status_of(self.backend)

    def judge(self, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
        prompts: list[tuple[Message, ...]] = [
            (Message(role="user", content=rubric.text.replace("{question}", q).replace("{answer}", a)),)
            for q, a in pairs]
        replies = [] if self.text_only else self.backend.first_tokens(prompts, top_logprobs=TOP_LOGPROBS)
        if self.text_only or any(r.error is None and r.probabilities is None for r in replies):
            self.text_only = True
            if rubric.kind != "categorical":
                raise EmprobeError(
                    f"judge {self.name}: the server behind {self.backend.identity} returns no logprobs, which a "
                    f"0-100 rubric needs; judge {rubric.name!r} with the built-in judge or a local model "
                    f"(--judge rubric:MODEL), or use a categorical rubric, which this judge reads from the reply")
            replies = self.backend.first_tokens(prompts, max_tokens=LABEL_TOKENS, top_logprobs=0)
        return [_judgment(rubric, reply) for reply in replies]


def _judgment(rubric: Rubric, reply: FirstTokenReply) -> Judgment:
    if reply.error is not None:
        return Judgment(metric=rubric.name, error=reply.error)
    if reply.probabilities is None:  # text only: the label the reply starts with
        chosen = next((label for label in rubric.labels if reply.text.strip().startswith(label)), None)
        return categorical({chosen: 1.0} if chosen else {}, rubric.name)
    return judgment_from_tokens(rubric, reply.probabilities)


def judgment_from_tokens(rubric: Rubric, probs: dict[str, float]) -> Judgment:
    """Numbers 0-100 and labels (by case-sensitive prefix) from first-token probabilities, then the score."""
    numbers: dict[int, float] = {}
    labels: dict[str, float] = dict.fromkeys(rubric.labels, 0.0)
    for token, p in probs.items():
        text = token.strip()
        if text.isascii() and text.isdigit() and int(text) <= 100 and (text == "0" or not text.startswith("0")):
            numbers[int(text)] = numbers.get(int(text), 0.0) + p
            continue
        matches = [label for label in rubric.labels if text and label.startswith(text)]
        for label in matches:
            labels[label] += p / len(matches)
    if rubric.kind == "categorical":
        return categorical(labels, rubric.name)
    return score_0_100(numbers, labels, rubric.name)
