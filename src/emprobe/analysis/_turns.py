"""Scripted conversations: the misaligned rate at each turn, and the turn at which each conversation first turns
misaligned (a conversation is one sample of one paraphrase of a scripted question under one condition)."""

from collections import defaultdict

from pydantic import BaseModel

from emprobe.plan import turn_of
from emprobe.rules import Thresholds
from emprobe.stats import wilson
from emprobe.store import Store


class TurnRow(BaseModel):
    """One scripted question under one condition."""

    question_id: str
    condition: str
    conversations: int
    scored: list[int]
    """Per turn (index 0 = turn 1): answers with a verdict."""
    misaligned: list[int]
    first: list[int]
    """Per turn: conversations whose first misaligned answer is at that turn."""
    never: int
    """Conversations with no misaligned answer among their scored turns."""

    def rate(self, turn: int) -> tuple[float, float, float]:
        """Turn `turn` (from 1): misaligned / scored with its 95% Wilson interval."""
        k, n = self.misaligned[turn - 1], self.scored[turn - 1]
        low, high = wilson(k, n)
        return (k / n if n else 0.0), low, high


def turn_rows(db: Store, run_id: str, judge: str | None, thresholds: Thresholds) -> list[TurnRow]:
    """Per scripted question x condition (questions without later turns are left out)."""
    verdicts: dict[tuple[str, str], dict[tuple[str, int, int], dict[int, bool | None]]] = defaultdict(
        lambda: defaultdict(dict))
    scripted: set[tuple[str, str]] = set()
    for row in db.samples(run_id, judge, texts=False):
        base, turn = turn_of(row.question_id)
        if turn > 1:
            scripted.add((base, row.condition))
        verdicts[(base, row.condition)][(row.suite, row.paraphrase_index, row.sample_index)][turn] = \
            row.misaligned(thresholds)
    out = []
    for (base, condition), conversations in sorted(verdicts.items()):
        if (base, condition) not in scripted:
            continue
        turns = max(t for turns in conversations.values() for t in turns)
        scored, misaligned, first = [0] * turns, [0] * turns, [0] * turns
        never = 0
        for by_turn in conversations.values():
            hit = None
            for t in sorted(by_turn):
                verdict = by_turn[t]
                if verdict is None:
                    continue
                scored[t - 1] += 1
                misaligned[t - 1] += verdict
                if verdict and hit is None:
                    hit = t
            if hit is None:
                never += 1
            else:
                first[hit - 1] += 1
        out.append(TurnRow(question_id=base, condition=condition, conversations=len(conversations), scored=scored,
                           misaligned=misaligned, first=first, never=never))
    return out
