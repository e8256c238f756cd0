"""Read-only access to a store file: runs, per-sample rows with texts and scores, judge identities."""

import json
from collections.abc import Iterator
from pathlib import Path

from emprobe.config import Thresholds
from emprobe.errors import EmprobeError
from emprobe.plan import SampleKey
from emprobe.store import RunRecord, Store

PRIMARY_METRICS = ("aligned", "coherent")


class SampleRow(SampleKey):
    """One planned sample with its prompt, answer and one judge's scores (metric -> (score, label, error))."""

    run_id: str
    system: str | None
    question: str
    answer: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    generation_error: str | None
    judge: str | None
    scores: dict[str, tuple[float | None, str | None, str | None]]

    def misaligned(self, thresholds: Thresholds) -> bool | None:
        """aligned < threshold and coherent > threshold; None when either score is missing."""
        aligned, coherent = self.score("aligned"), self.score("coherent")
        if aligned is None or coherent is None:
            return None
        return thresholds.misaligned(aligned, coherent)

    def score(self, metric: str) -> float | None:
        return self.scores.get(metric, (None, None, None))[0]


class ReadStore(Store):
    """A store file opened read-only (`mode=ro`), with the queries reports and exports need."""

    def __init__(self, path: str | Path):
        super().__init__(path, read_only=True)

    def resolve_judge(self, run: RunRecord, judge: str | None = None) -> str | None:
        """`judge` if it scored this run (an error otherwise); by default the first configured judge that
        scored it, else any judge that did, else None."""
        scored = self.judges(run.run_id)
        if judge is not None:
            if judge not in scored:
                raise EmprobeError(f"run {run.run_id}: judge {judge!r} scored nothing "
                                   f"(judges: {', '.join(scored) or 'none'})")
            return judge
        configured = [j for j in run.config.get("judges", []) if j in scored]
        return (configured or scored or [None])[0]

    def judge_identities(self, run_id: str) -> dict[str, list[str]]:
        """Per judge spec, the exact judge identities (model weights) behind its stored judgments."""
        out: dict[str, list[str]] = {}
        for spec, identity in self.db.execute(
            "SELECT DISTINCT c.judge, j.judge FROM scores c JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE c.run_id = ? ORDER BY c.judge, j.judge", (run_id,)
        ):
            out.setdefault(spec, []).append(identity)
        return out

    def generation_models(self, run_id: str) -> list[str]:
        """The model identities that produced this run's generations."""
        return [m for (m,) in self.db.execute(
            "SELECT DISTINCT g.model FROM samples s JOIN generations g ON g.gen_key = s.gen_key "
            "WHERE s.run_id = ? ORDER BY g.model", (run_id,))]

    def metrics(self, run_id: str, judge: str | None) -> list[str]:
        """The metrics this judge scored in this run, aligned and coherent first."""
        if judge is None:
            return []
        found = {m for (m,) in self.db.execute(
            "SELECT DISTINCT metric FROM scores WHERE run_id = ? AND judge = ?", (run_id, judge))}
        return [m for m in PRIMARY_METRICS if m in found] + sorted(found - set(PRIMARY_METRICS))

    def judge_errors(self, run_id: str, judge: str, limit: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent judge error messages: (metric, message, count)."""
        return self.db.execute(
            "SELECT j.metric, j.error, count(*) AS n FROM scores c JOIN judgments j ON j.judgment_key = "
            "c.judgment_key WHERE c.run_id = ? AND c.judge = ? AND j.error IS NOT NULL "
            "GROUP BY j.metric, j.error ORDER BY n DESC, j.metric LIMIT ?", (run_id, judge, limit),
        ).fetchall()

    def samples(self, run_id: str, judge: str | None, texts: bool = True) -> Iterator[SampleRow]:
        """Every planned sample of the run in sample-id order, with one judge's scores; streamed."""
        text_cols, prompts = ("p.messages, g.text", "JOIN prompts p ON p.prompt_key = s.prompt_key ") if texts \
            else ("NULL, NULL", "")
        cursor = self.db.execute(
            "SELECT s.sample_id, s.suite, s.question_id, s.paraphrase_index, s.condition, s.sample_index, s.seed, "
            f"{text_cols}, g.finish_reason, g.prompt_tokens, g.completion_tokens, g.error, "
            "c.metric, j.score, j.label, j.error "
            f"FROM samples s {prompts}"
            "LEFT JOIN generations g ON g.gen_key = s.gen_key "
            "LEFT JOIN scores c ON c.run_id = s.run_id AND c.sample_id = s.sample_id AND c.judge = ? "
            "LEFT JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE s.run_id = ? ORDER BY s.sample_id", (judge, run_id),
        )
        current: SampleRow | None = None
        for row in cursor:
            if current is None or row[0] != current.sample_id:
                if current is not None:
                    yield current
                current = _sample_row(run_id, judge, row)
            metric, score, label, error = row[13:]
            if metric is not None:
                current.scores[metric] = (score, label, error)
        if current is not None:
            yield current


def _sample_row(run_id: str, judge: str | None, row: tuple) -> SampleRow:
    messages = json.loads(row[7]) if row[7] else []
    system = next((m["content"] for m in messages if m["role"] == "system"), None)
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return SampleRow.model_construct(  # the store's own rows: no validation needed, much faster
        run_id=run_id, sample_id=row[0], suite=row[1], question_id=row[2], paraphrase_index=row[3],
        condition=row[4], sample_index=row[5], seed=row[6], system=system, question=question, answer=row[8],
        finish_reason=row[9], prompt_tokens=row[10], completion_tokens=row[11], generation_error=row[12],
        judge=judge, scores={},
    )
