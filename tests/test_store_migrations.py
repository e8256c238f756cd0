"""A versioned store: files written by the previous schema open (migrated in one transaction) and report the
same numbers as a store written now; a newer store is refused with one line."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from emprobe.analysis import load_run
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.store import SCHEMA_VERSION, Store
from store_factory import make_store

V1 = Path(__file__).parent / "data" / "store_v1.db"
"""Written by emprobe 0.1.0 (unversioned schema): make_store(p), then make_store(p, run_id="run-b",
name="tuned", misaligned={"free": 4, "json": 5}), then one validation."""


VALIDATION = {"judge": "rubric:tiny", "identity": "tiny-judge@abc", "reference": "ref.jsonl",
              "reference_sha256": "f" * 64, "rows": 100, "labelled": 90, "auc": 0.9, "kappa": 0.5,
              "spearman": {"aligned": 0.8, "coherent": 0.6}, "tp": 18, "fn": 2, "tn": 65, "fp": 5, "named": {},
              "failures": 0, "worst": []}
"""The validation the fixture holds."""

V3 = Path(__file__).parent / "data" / "store_v3.db"
"""Written by schema 3 (before training runs had tables): the same runs and validation as V1."""

V4 = Path(__file__).parent / "data" / "store_v4.db"
"""Written by schema 4 (before diagnostics had tables): the same runs and validation as V1."""


def _comparable(report) -> dict:
    data = report.model_dump()
    for volatile in ("created", "updated", "versions"):
        data["run"].pop(volatile)
    data["run"]["config"] = RunConfig.model_validate(data["run"]["config"])  # configs stored by 0.1.0 still read
    return data


def _fresh(tmp_path: Path) -> Path:
    """The fixtures' runs and validation written by the current schema."""
    fresh = make_store(tmp_path / "fresh.db")
    make_store(fresh, run_id="run-b", name="tuned", misaligned={"free": 4, "json": 5})
    with Store(fresh) as db:
        db.save_validation("tiny-judge@abc", "f" * 64, "rubric:tiny", VALIDATION)
    return fresh


def _user_version(path: Path) -> int:
    return sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0]


def test_a_store_of_the_previous_schema_opens_and_reports_as_before(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    fresh = _fresh(tmp_path)
    with Store(old) as migrated, Store(fresh, read_only=True) as now:
        assert _user_version(old) == SCHEMA_VERSION
        for run in ("base", "tuned"):
            assert _comparable(load_run(migrated, run)) == _comparable(load_run(now, run))
            assert [s.model_dump() for s in migrated.samples(migrated.run(run).run_id, "rubric:tiny")] == \
                [s.model_dump() for s in now.samples(now.run(run).run_id, "rubric:tiny")]
        assert migrated.validations("tiny-judge@abc") == [VALIDATION]
        assert migrated.db.execute("PRAGMA foreign_keys").fetchone() == (1,)
        with pytest.raises(sqlite3.IntegrityError):  # foreign keys now hold: no sample of an unknown run
            migrated.db.execute("INSERT INTO samples SELECT 'no-such-run', sample_id, suite, question_id, "
                                "paraphrase_index, condition, sample_index, seed, prompt_key, question_key, "
                                "decoding_key, gen_key FROM samples LIMIT 1")


def test_migrated_samples_carry_their_question_and_decoding(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    with Store(old) as db:
        db.db.execute("DELETE FROM generations")  # everything pending again
        pending = [s for chunk in db.pending_generation("run-a") for s in chunk]
        seeds = dict(db.db.execute("SELECT gen_key, seed FROM samples WHERE run_id = 'run-a'").fetchall())
        questions = {r.question for r in db.samples("run-a", None)}
    assert len(pending) == 48
    assert all(p.decoding.seed == seeds[p.gen_key] and p.decoding.max_tokens == 256 for p in pending)
    assert questions == {f"Question {q}? <i>tell me</i>" for q in ("wish", "bored", "rule_world")}


def test_a_failed_migration_changes_nothing(tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    with sqlite3.connect(old) as raw:  # a run whose config lost its conditions: its samples cannot be migrated
        raw.execute("UPDATE runs SET config = json_set(config, '$.conditions', json('[]')) WHERE run_id = 'run-b'")
    before = old.read_bytes()
    with pytest.raises(EmprobeError, match="not a usable emprobe store.*belong to no condition"):
        Store(old)
    raw = sqlite3.connect(old)
    assert raw.execute("PRAGMA user_version").fetchone() == (0,)
    assert "decoding_key" not in {row[1] for row in raw.execute("PRAGMA table_info(samples)")}
    assert raw.execute("SELECT count(*) FROM samples").fetchone() == (96,)
    raw.close()
    assert old.read_bytes() == before


def test_a_newer_store_is_refused_with_one_line(tmp_path):
    path = make_store(tmp_path / "new.db")
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for read_only in (False, True):
        with pytest.raises(EmprobeError, match=f"newer emprobe \\(store schema {SCHEMA_VERSION + 1}; this version "
                                               f"reads up to {SCHEMA_VERSION}\\)"):
            Store(path, read_only=read_only)


def test_read_only_opening_migrates_only_a_writable_file(tmp_path, monkeypatch):
    old = tmp_path / "old.db"
    shutil.copy(V1, old)
    with Store(old, read_only=True) as db:  # writable file: migrated first, then read
        assert db.run("base").run_id == "run-a"
    assert _user_version(old) == SCHEMA_VERSION
    locked = tmp_path / "locked.db"
    shutil.copy(V1, locked)
    before = locked.read_bytes()
    monkeypatch.setattr("emprobe.store._sqlite.os.access", lambda path, mode: False)  # as if on a read-only disk
    with pytest.raises(EmprobeError, match="older than this emprobe's.*read-only here"):
        Store(locked, read_only=True)
    assert locked.read_bytes() == before


def test_a_store_of_schema_3_opens_with_empty_training_tables_and_reports_as_before(tmp_path):
    old = tmp_path / "v3.db"
    shutil.copy(V3, old)
    fresh = _fresh(tmp_path)
    with Store(old) as migrated, Store(fresh, read_only=True) as now:
        assert _user_version(old) == SCHEMA_VERSION
        for run in ("base", "tuned"):
            assert _comparable(load_run(migrated, run)) == _comparable(load_run(now, run))
        assert migrated.validations("tiny-judge@abc") == [VALIDATION]
        assert migrated.trainings() == [] and migrated.sweep("base") is None
        tables = {t for (t,) in migrated.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"train_runs", "train_losses", "train_checkpoints", "sweeps", "sweep_runs"} <= tables
        with pytest.raises(sqlite3.IntegrityError):  # a sweep arm must name a stored run
            migrated.db.execute("INSERT INTO sweep_runs VALUES ('s', 0, 'm', 'no-such-run', NULL)")


def test_a_store_of_schema_4_opens_with_empty_diagnostics_tables_and_reports_as_before(tmp_path):
    old = tmp_path / "v4.db"
    shutil.copy(V4, old)
    fresh = _fresh(tmp_path)
    with Store(old) as migrated, Store(fresh, read_only=True) as now:
        assert _user_version(old) == SCHEMA_VERSION == 5
        for run in ("base", "tuned"):
            assert _comparable(load_run(migrated, run)) == _comparable(load_run(now, run))
        assert migrated.validations("tiny-judge@abc") == [VALIDATION]
        assert migrated.activations("run-a") == [] and migrated.divergences("run-a", "m", "r") == []
        tables = {t for (t,) in migrated.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"activations", "directions", "divergences", "pair_scores"} <= tables
        with pytest.raises(sqlite3.IntegrityError):  # a captured layer must belong to a stored run
            migrated.db.execute("INSERT INTO activations VALUES ('no-such-run', 'm', 'last', 1, 'h', 'p', 's', 'p', "
                                "'s', 1, 1, 'now')")


def _open_when_told(path: Path, start, results) -> None:
    start.wait()
    try:
        Store(path).close()
        results.put("ok")
    except EmprobeError as err:
        results.put(str(err))


def test_processes_creating_one_store_at_the_same_moment_all_open_it(tmp_path):
    """Switching a new file to WAL answered "database is locked" at once to about 1 in 10 such races."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for trial in range(30):
        path, start, results = tmp_path / f"s{trial}.db", context.Event(), context.Queue()
        workers = [context.Process(target=_open_when_told, args=(path, start, results)) for _ in range(3)]
        for w in workers:
            w.start()
        start.set()
        for w in workers:
            w.join(timeout=60)
        assert [results.get(timeout=5) for _ in workers] == ["ok"] * 3, trial
        with Store(path, read_only=True) as db:
            assert db.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
