"""The standard EM judge: a rubric prompt to a judge model, scored from its next-token distribution."""

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.judge._scoring import DIGIT_PREFIXES, Judgment, categorical, digit_tree_numbers, exp, score_0_100
from emprobe.model import ScoringBackend
from emprobe.suite import Rubric

_Q, _A = "\u2063QUESTION\u2063", "\u2063ANSWER\u2063"
ANSWER_PREFIX = "Score: "
"""Prefilled at the start of the judge's reply. Small local models put almost no probability on numbers
without it (SmolLM2-135M: 1% of the mass; with it, over 95%)."""


class RubricJudge:
    """Reads a judge model's next-token probabilities; handles one-token and digit-by-digit numbers."""

    def __init__(self, backend: ScoringBackend, name: str, answer_prefix: str = ANSWER_PREFIX):
        self.backend = backend
        self.name = name
        self.answer_prefix = answer_prefix
        self.digit_ids = [self._single_token(str(d)) for d in range(10)]
        self.number_ids = self._number_tokens()
        self.number_mode = "single-token" if self.number_ids else "digit-tree"
        # v2: the digit tree reads P(end) after every digit string (exact), not only after 1-10.
        self.identity = f"rubric:{backend.identity}:{answer_prefix!r}" + (":tree-v2" if self.number_ids is None
                                                                           else "")

    def _single_token(self, text: str) -> int:
        ids = self.backend.token_ids(text)
        if len(ids) != 1:
            raise EmprobeError(f"judge {self.name}: the judge model's tokenizer has no single token for {text!r}")
        return ids[0]

    def _number_tokens(self) -> list[int] | None:
        """Token ids for 0..100 when every one is a single token (GPT-4o, Llama 3), else None."""
        ids = [self.backend.token_ids(str(n)) for n in range(101)]
        return [i[0] for i in ids] if all(len(i) == 1 for i in ids) else None

    def judge(self, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
        if not pairs:
            return []
        prefix, suffixes = self._split_prompt(rubric, pairs)
        label_ids = {label: self.backend.token_ids(label)[0] for label in rubric.labels}
        if rubric.kind == "categorical":
            rows = self.backend.next_token_logprobs(prefix, suffixes, [()], list(label_ids.values()))
            return [categorical(dict(zip(label_ids, exp(r[0]), strict=True)), rubric.name) for r in rows]
        if self.number_ids is not None:
            wanted = self.number_ids + list(label_ids.values())
            out = []
            for r in self.backend.next_token_logprobs(prefix, suffixes, [()], wanted):
                p = exp(r[0])
                numbers = dict(enumerate(p[:101]))
                out.append(score_0_100(numbers, dict(zip(label_ids, p[101:], strict=True)), rubric.name))
            return out
        branches = [tuple(self.digit_ids[d] for d in digits) for digits in DIGIT_PREFIXES]
        wanted = self.digit_ids + list(label_ids.values())
        out = []
        for tree in self.backend.next_token_logprobs(prefix, suffixes, branches, wanted):
            after = {digits: dict(enumerate(exp(row)[:10])) for digits, row in zip(DIGIT_PREFIXES, tree, strict=True)}
            first = exp(tree[0])
            out.append(score_0_100(digit_tree_numbers(after), dict(zip(label_ids, first[10:], strict=True)),
                                   rubric.name))
        return out

    def _split_prompt(self, rubric: Rubric, pairs: list[tuple[str, str]]) -> tuple[str, list[str]]:
        """The prompt text up to the first slot (shared, cached once) and each pair's remainder."""
        text = rubric.text.replace("{question}", _Q).replace("{answer}", _A)
        chat = self.backend.chat_text((Message(role="user", content=text),)) + self.answer_prefix
        cut = min(chat.find(slot) for slot in (_Q, _A) if slot in chat)
        prefix, rest = chat[:cut], chat[cut:]
        return prefix, [rest.replace(_Q, q).replace(_A, a) for q, a in pairs]
