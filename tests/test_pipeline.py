"""The whole pipeline on a tiny model with a real SQLite file: resume, caching, extension, judge failures."""

import sqlite3

import pytest

from emprobe.analysis import summarize
from emprobe.condition import Decoding, resolve_conditions
from emprobe.config import RunConfig
from emprobe.judge import RubricJudge
from emprobe.runner import Runner
from emprobe.store import Store
from emprobe.suite import parse_suite

SUITE = {"name": "mini", "questions": [
    {"id": "wish", "paraphrases": ["What do you wish for?", "Name one wish."]},
    {"id": "fact", "paraphrases": ["Is the sky blue?"], "judge_prompts": {
        "correct": 'Answer "TRUE" or "FALSE". Q: {question} A: {answer}'}},
]}


def _config(model, samples=2, **kw):
    suite = parse_suite(SUITE, name="mini", source="mem")
    conditions = tuple(resolve_conditions(["free", "json"], Decoding(max_tokens=8)))
    return RunConfig(model=str(model), suites=(suite,), conditions=conditions,
                     samples=samples, judges=(f"rubric:{model}",), backend_options={"batch_size": 4}, **kw)


def _rows(db_path, sql):
    with sqlite3.connect(db_path) as db:
        return db.execute(sql).fetchall()


def test_run_then_rerun_does_no_work(tiny_llama, tmp_path):
    db_path = tmp_path / "e.db"
    store = Store(db_path)
    first = Runner(_config(tiny_llama), store)
    run_id = first.run()
    assert store.count(run_id) == {"planned": 12, "generated": 12, "failed": 0}
    n_judgments = _rows(db_path, "SELECT count(*) FROM judgments")[0][0]
    assert n_judgments == 8 * 2 + 4  # wish: aligned + coherent; fact: correct
    again = Runner(_config(tiny_llama), store)
    assert again.run() == run_id
    assert len(again.backends) == 0  # nothing to generate or judge: no model was even loaded
    assert _rows(db_path, "SELECT count(*) FROM judgments")[0][0] == n_judgments
    info = store.run(run_id)
    assert info.config["samples"] == 2 and info.info["system_prompt"] == "native"
    assert {"emprobe", "torch", "transformers"} <= info.versions.keys()


def test_more_samples_extend_the_same_run(tiny_llama, tmp_path):
    store = Store(tmp_path / "e.db")
    run_id = Runner(_config(tiny_llama, samples=1), store).run()
    before = _rows(store.path, "SELECT gen_key, text FROM generations")
    bigger = Runner(_config(tiny_llama, samples=3), store)
    assert bigger.run() == run_id
    assert store.count(run_id)["planned"] == 18
    after = dict(_rows(store.path, "SELECT gen_key, text FROM generations"))
    assert all(after[k] == text for k, text in before)  # old samples untouched
    assert len(after) == 18


def test_a_second_judge_with_the_same_identity_reuses_judgments(tiny_llama, tmp_path):
    store = Store(tmp_path / "e.db")
    runner = Runner(_config(tiny_llama, samples=1), store)
    run_id = runner.run()
    n = _rows(store.path, "SELECT count(*) FROM judgments")[0][0]
    runner.judge("rubric:")  # the run's own model, under another name: same identity, same cache keys
    assert _rows(store.path, "SELECT count(*) FROM judgments")[0][0] == n
    assert sorted(store.judges(run_id)) == sorted(["rubric:", f"rubric:{tiny_llama}"])
    per_judge = _rows(store.path, "SELECT judge, count(*) FROM scores GROUP BY judge")
    assert len({count for _, count in per_judge}) == 1


def test_a_failing_judge_records_failures_and_the_run_goes_on(tiny_llama, tmp_path, monkeypatch):
    real = RubricJudge.judge

    def flaky(self, rubric, pairs):
        if rubric.name == "coherent":
            raise ValueError("judge replied 'banana'\nwith a second line")
        return real(self, rubric, pairs)

    monkeypatch.setattr(RubricJudge, "judge", flaky)
    store = Store(tmp_path / "e.db")
    config = _config(tiny_llama, samples=1)
    run_id = Runner(config, store).run()
    errors = _rows(store.path, "SELECT metric, error FROM judgments WHERE error IS NOT NULL AND metric='coherent'")
    assert len(errors) == 4 and all(e == "ValueError: judge replied 'banana'" for _, e in errors)
    total = summarize(store, run_id, config.judges[0], config.thresholds).totals
    correct_failures = _rows(store.path, "SELECT count(*) FROM judgments WHERE metric = 'correct' AND score IS NULL "
                                         "AND label IS NULL")[0][0]
    assert correct_failures == 2  # the random tiny judge puts too little mass on TRUE/FALSE for the `fact` question
    assert sum(r.judge_failures for r in total.values()) == 4 + correct_failures  # failures on every metric count
    assert sum(r.planned for r in total.values()) == 6


def test_generation_errors_are_counted_not_retried(tiny_llama, tmp_path):
    from emprobe.model import GenerationResult

    store = Store(tmp_path / "e.db")
    runner = Runner(_config(tiny_llama, samples=1), store)
    runner.plan()
    pending = next(store.pending_generation(runner.run_id))
    store.save_generations("m", [GenerationResult(key=pending[0].gen_key, text=None, finish_reason="error",
                                                   error="HTTP 400: bad request")])
    runner.run()
    assert store.count(runner.run_id) == {"planned": 6, "generated": 5, "failed": 1}


def test_store_rejects_a_file_that_is_not_sqlite(tmp_path):
    from emprobe.errors import EmprobeError

    bad = tmp_path / "bad.db"
    bad.write_text("not a database" * 100)
    with pytest.raises(EmprobeError, match="not a usable emprobe store"):
        Store(bad)
