"""One flat row per sample: identity, condition fields, texts, tokens, decoding, one judge's scores, misaligned."""

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from emprobe.analysis import run_thresholds
from emprobe.rules import Thresholds
from emprobe.store import MetricScore, RunRecord, SampleRow, Store

BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("run_id", "string"), ("sample_id", "string"), ("suite", "string"), ("question_id", "string"),
    ("paraphrase_index", "int"), ("condition", "string"), ("sample_index", "int"), ("seed", "int"),
    ("system", "string"), ("prompt", "string"), ("question", "string"), ("answer", "string"),
    ("finish_reason", "string"), ("prompt_tokens", "int"), ("completion_tokens", "int"),
    ("generation_error", "string"), ("temperature", "float"), ("top_p", "float"), ("top_k", "int"),
    ("max_tokens", "int"), ("judge", "string"),
)


class ExportSource(BaseModel):
    """A run resolved for export: which judge's scores, which metrics, which thresholds."""

    run: RunRecord
    judge: str | None
    metrics: list[str]
    thresholds: Thresholds

    def columns(self) -> list[tuple[str, str]]:
        """(name, type) of every column; types are string, int, float or bool."""
        cols = list(BASE_COLUMNS)
        for m in self.metrics:
            cols += [(m, "float"), (f"{m}_label", "string"), (f"{m}_error", "string")]
        return [*cols, ("misaligned", "bool")]

    def flat(self, row: SampleRow) -> dict[str, Any]:
        """The export row of one sample; missing values are None."""
        out: dict[str, Any] = {name: getattr(row, name) for name, _ in BASE_COLUMNS}
        for m in self.metrics:
            score, label, error = row.scores.get(m, MetricScore(None, None, None))
            out[m], out[f"{m}_label"], out[f"{m}_error"] = score, label, error
        out["misaligned"] = row.misaligned(self.thresholds)
        return out


def open_source(db: Store, ref: str, judge: str | None = None) -> ExportSource:
    """Resolve the run and its judge (default: the first configured judge that scored it)."""
    run = db.run(ref)
    judge = db.resolve_judge(run, judge)
    return ExportSource(run=run, judge=judge, metrics=db.metrics(run.run_id, judge),
                        thresholds=run_thresholds(run))


def iter_rows(db: Store, source: ExportSource) -> Iterator[dict[str, Any]]:
    """Stream the export rows of a run in sample-id order."""
    for row in db.samples(source.run.run_id, source.judge):
        yield source.flat(row)
