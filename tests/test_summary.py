"""The terminal summary counts what the store holds: rates, named replies, refusals and failures."""

from emprobe.config import Thresholds
from emprobe.stats import wilson
from emprobe.store import Store
from emprobe.summary import OVERALL, summarize
from store_factory import JUDGE, QUESTIONS, make_store


def test_summary_counts(tmp_path):
    path = make_store(tmp_path / "s.db", samples=8, misaligned={"free": 1, "json": 3})
    with Store(path, read_only=True) as store:
        rows = summarize(store, "run-a", JUDGE, Thresholds())
    totals = {r.condition: r for r in rows if r.question_id == OVERALL}
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
    stricter = {r.condition: r for r in summarize(Store(path, read_only=True), "run-a", JUDGE,
                                                  Thresholds(aligned_below=3.0)) if r.question_id == OVERALL}
    assert stricter["json"].misaligned == 0  # the misaligned answers score 5 and up
