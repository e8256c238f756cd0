"""The store's diagnostics queries: answers to teacher-force, captured activations, directions, divergences and
preference-pair scores. Arrays live beside the store; the store keeps their paths and sha256."""

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from emprobe.condition import Message
from emprobe.rules import ALIGNED, COHERENT, Thresholds
from emprobe.store._records import ActivationArray, AnsweredSample, Divergence, PairScore, RunRecord
from emprobe.store._schema import now

_ARRAY_FIELDS = tuple(ActivationArray.model_fields)



class DiagnosticsQueries:
    """Mixed into `Store`: what `emprobe activations`, `direction`, `diverge` and `pairs` read and write."""

    db: sqlite3.Connection
    path: Path
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]]
    run: Callable[[str], RunRecord]

    def count_answered(self, run_id: str) -> int:
        """How many of the run's samples have an answer."""
        return self.db.execute("SELECT count(*) FROM samples s JOIN generations g ON g.gen_key = s.gen_key "
                               "AND g.error IS NULL AND g.text IS NOT NULL WHERE s.run_id = ?", (run_id,)).fetchone()[0]

    def answered(self, run_id: str, chunk: int = 512) -> Iterator[list[AnsweredSample]]:
        """The run's answered samples with their messages and their condition's thinking switch, in sample-id
        order, in chunks."""
        thinking = {c["name"]: c.get("thinking") for c in self.run(run_id).config.get("conditions", [])}
        after = ""
        while True:
            rows = self.db.execute(
                "SELECT s.sample_id, p.messages, g.text, s.condition FROM samples s JOIN prompts p ON "
                "p.prompt_key = s.prompt_key JOIN generations g ON g.gen_key = s.gen_key AND g.error IS NULL AND "
                "g.text IS NOT NULL WHERE s.run_id = ? AND s.sample_id > ? ORDER BY s.sample_id LIMIT ?",
                (run_id, after, chunk),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [AnsweredSample(sample_id=sample_id, messages=tuple(Message(**m) for m in json.loads(messages)),
                                  answer=answer, thinking=thinking.get(condition))
                   for sample_id, messages, answer, condition in rows]

    def verdict_ids(self, run_id: str, judge: str, thresholds: Thresholds, aligned_above: float
                    ) -> tuple[set[str], set[str]]:
        """(misaligned, clearly aligned) sample ids of a run by one judge: aligned ones score above `aligned_above`
        and are coherent; answers in between, and those missing a score, are in neither."""
        misaligned, aligned = set(), set()
        for row in self.db.execute(
                "SELECT c.sample_id, max(CASE WHEN c.metric = ? THEN j.score END), "
                "max(CASE WHEN c.metric = ? THEN j.score END) FROM scores c JOIN judgments j ON "
                "j.judgment_key = c.judgment_key WHERE c.run_id = ? AND c.judge = ? GROUP BY c.sample_id",
                (ALIGNED, COHERENT, run_id, judge)):
            sample_id, score, coherent = row
            if score is None or coherent is None:
                continue
            if thresholds.misaligned(score, coherent):
                misaligned.add(sample_id)
            elif score > aligned_above and thresholds.coherent(coherent):
                aligned.add(sample_id)
        return misaligned, aligned

    # ---- activations and directions ---------------------------------------------------------------

    def save_activations(self, arrays: list[ActivationArray]) -> None:
        """Record captured layers, replacing an earlier capture of the same run, model, position and layer."""
        with self.transaction():
            self.db.executemany(
                f"INSERT OR REPLACE INTO activations ({', '.join(_ARRAY_FIELDS)}, created) "
                f"VALUES ({', '.join('?' * (len(_ARRAY_FIELDS) + 1))})",
                [(*(getattr(a, f) for f in _ARRAY_FIELDS), now()) for a in arrays])

    def activations(self, run_id: str, model: str | None = None, position: str | None = None) -> list[ActivationArray]:
        """The run's captured layers (of one model identity and position, when given), by model, position, layer."""
        rows = self.db.execute(
            f"SELECT {', '.join(_ARRAY_FIELDS)} FROM activations WHERE run_id = ? AND (? IS NULL OR model = ?) "
            "AND (? IS NULL OR position = ?) ORDER BY model, position, layer",
            (run_id, model, model, position, position))
        return [ActivationArray(**dict(zip(_ARRAY_FIELDS, row, strict=True))) for row in rows]

    def save_direction(self, sha256: str, path: str, run_id: str, model: str, layer: int, record: dict) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO directions VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (sha256, path, run_id, model, layer, now(), json.dumps(record)))

    # ---- divergences and preference pairs ----------------------------------------------------------

    def save_divergences(self, run_id: str, model: str, reference: str, rows: list[Divergence]) -> None:
        """Record per-answer divergences of `model` from `reference` (identities), replacing earlier ones."""
        stamp = now()
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO divergences VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, d.sample_id, model, reference, len(d.kl), d.mean_kl, max(d.kl, default=0.0),
                  sum(d.gap), json.dumps([list(t) for t in zip(d.tokens, d.kl, d.gap, strict=True)]), stamp)
                 for d in rows])

    def divergence_models(self, run_id: str) -> list[tuple[str, str]]:
        """The (model, reference) identity pairs whose divergences on this run are stored."""
        return [(m, r) for m, r in self.db.execute(
            "SELECT DISTINCT model, reference FROM divergences WHERE run_id = ? ORDER BY model, reference", (run_id,))]

    def divergences(self, run_id: str, model: str, reference: str) -> list[Divergence]:
        rows = self.db.execute("SELECT sample_id, detail FROM divergences WHERE run_id = ? AND model = ? AND "
                               "reference = ? ORDER BY sample_id", (run_id, model, reference))
        out = []
        for sample_id, detail in rows:
            tokens, kl, gap = zip(*json.loads(detail), strict=True) if detail != "[]" else ((), (), ())
            out.append(Divergence(sample_id=sample_id, tokens=list(tokens), kl=list(kl), gap=list(gap)))
        return out

    def save_pair_scores(self, pairs_sha256: str, model: str, scores: list[PairScore]) -> None:
        stamp = now()
        fields = tuple(PairScore.model_fields)
        with self.transaction():
            self.db.executemany(
                f"INSERT OR REPLACE INTO pair_scores (pairs_sha256, model, {', '.join(fields)}, created) "
                f"VALUES ({', '.join('?' * (len(fields) + 3))})",
                [(pairs_sha256, model, *(getattr(s, f) for f in fields), stamp) for s in scores])
