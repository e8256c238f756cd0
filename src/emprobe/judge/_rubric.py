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
LABEL_PREFIX = "Answer:"
"""Prefilled before a categorical rubric's label, which is read with and without a leading space (" TRUE").
After "Score: " SmolLM2-135M put no measurable probability on the `correct` rubric's labels; after "Answer:",
0.39-0.49."""


class RubricJudge:
    """Reads a judge model's next-token probabilities; handles one-token and digit-by-digit numbers."""

    def __init__(self, backend: ScoringBackend, name: str, answer_prefix: str = ANSWER_PREFIX):
        self.backend = backend
        self.name = name
        self.answer_prefix = answer_prefix
        self.digit_ids = [self._single_token(str(d)) for d in range(10)]
        self.number_ids = self._number_tokens()
        self.number_mode = "single-token" if self.number_ids else "digit-tree"
        # tree-v2: the digit tree reads P(end) after every digit string (exact), not only after 1-10.
        # labels-v2: categorical labels are read after LABEL_PREFIX, with and without a leading space.
        self.identity = f"rubric:{backend.identity}:{answer_prefix!r}" + (":tree-v2" if self.number_ids is None
                                                                           else "") + ":labels-v2"

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
        if rubric.kind == "categorical":
            return self._categorical(rubric, pairs)
        prefix, suffixes = self._split_prompt(rubric, pairs, self.answer_prefix)
        label_ids = {label: self.backend.token_ids(label)[0] for label in rubric.labels}
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

    def _categorical(self, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
        """Each label's probability: the summed probabilities of its first tokens after LABEL_PREFIX."""
        tokens = self._label_tokens(rubric)
        wanted = sorted({t for ids in tokens.values() for t in ids})
        prefix, suffixes = self._split_prompt(rubric, pairs, LABEL_PREFIX)
        out = []
        for row in self.backend.next_token_logprobs(prefix, suffixes, [()], wanted):
            p = dict(zip(wanted, exp(row[0]), strict=True))
            out.append(categorical({label: sum(p[t] for t in ids) for label, ids in tokens.items()}, rubric.name))
        return out

    def _label_tokens(self, rubric: Rubric) -> dict[str, list[int]]:
        """The first tokens of " LABEL" and "LABEL"; a token that starts two labels tells neither, so it is dropped."""
        first = {label: {self.backend.token_ids(text)[0] for text in (f" {label}", label)} for label in rubric.labels}
        out = {}
        for label, ids in first.items():
            own = [t for t in sorted(ids) if not any(t in other for name, other in first.items() if name != label)]
            if not own:
                raise EmprobeError(f"judge {self.name}: rubric {rubric.name!r}: label {label!r} starts with the same "
                                   "token as another label, so the judge model cannot tell them apart; rename it")
            out[label] = own
        return out

    def _split_prompt(self, rubric: Rubric, pairs: list[tuple[str, str]], answer_prefix: str) -> tuple[str, list[str]]:
        """The prompt text up to the first slot (shared, cached once) and each pair's remainder."""
        text = rubric.text.replace("{question}", _Q).replace("{answer}", _A)
        chat = self.backend.chat_text((Message(role="user", content=text),)) + answer_prefix
        cut = min(chat.find(slot) for slot in (_Q, _A) if slot in chat)
        prefix, rest = chat[:cut], chat[cut:]
        return prefix, [rest.replace(_Q, q).replace(_A, a) for q, a in pairs]
