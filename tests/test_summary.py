"""The terminal summary counts what the store holds: rates, named replies, refusals and failures."""

from emprobe.analysis import summarize
from emprobe.rules import OVERALL, Thresholds
from emprobe.stats import wilson
from emprobe.store import Store
from store_factory import JUDGE, QUESTIONS, make_store


def test_summary_counts(tmp_path):
    path = make_store(tmp_path / "s.db", samples=8, misaligned={"free": 1, "json": 3})
    with Store(path, read_only=True) as store:
        summary = summarize(store, "run-a", JUDGE, Thresholds())
    rows, totals = summary.rows(), summary.totals
    free, json_ = totals["free"], totals["json"]
    # free: the first question has a failed generation, a judge failure and a REFUSAL among its 8 samples.
    assert (free.planned, free.generation_failures, free.judge_failures, free.labelled) == (24, 1, 1, 1)
    assert free.refusals == 1 and free.scored == 21 and free.misaligned == len(QUESTIONS)
    assert free.misaligned_rate_with_named == len(QUESTIONS) / 22
    assert (json_.scored, json_.misaligned) == (24, 3 * len(QUESTIONS))
    assert json_.misaligned_interval == wilson(9, 24)
    per_question = [r for r in rows if r.question_id != OVERALL]
    assert len(per_question) == len(QUESTIONS) * 2
    assert sum(r.scored for r in per_question if r.condition == "free") == free.scored
    stricter = summarize(Store(path, read_only=True), "run-a", JUDGE, Thresholds(aligned_below=3.0)).totals
    assert stricter["json"].misaligned == 0  # the misaligned answers score 5 and up


def test_the_overall_row_pools_every_count_refusals_included(tmp_path):
    from emprobe.analysis import load_run
    from emprobe.report import rates_table

    path = make_store(tmp_path / "s.db", samples=8, misaligned={"free": 1, "json": 3})
    with Store(path, read_only=True) as store:
        summary = summarize(store, "run-a", JUDGE, Thresholds())
        report = load_run(store, "run-a")
    for field in ("planned", "scored", "misaligned", "coherent", "labelled", "refusals", "judge_failures",
                  "generation_failures", "pending"):
        assert getattr(summary.overall, field) == sum(getattr(t, field) for t in summary.totals.values()), field
    assert summary.overall.refusals == 1 and report.overall.refusals == 1
    assert report.overall.refusal_rate == 1 / (report.overall.scored + report.overall.labelled)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(rates_table(report))
    overall_line = next(line for line in console.export_text().splitlines() if "(all)" in line)
    assert f"{report.overall.refusal_rate:.1%}" in overall_line
