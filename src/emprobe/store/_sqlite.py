"""The embedded store: one SQLite file of runs, planned samples, generations and judgments.

Generations are keyed by content (model + adapter + messages + decoding + seed) and judgments by judge +
rubric + question + answer, so identical work is never done twice. Every write is one transaction, so a
process killed at any moment leaves either all of a batch or none of it.
"""

import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT, model TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
    config TEXT NOT NULL, versions TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS prompts (prompt_key TEXT PRIMARY KEY, messages TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL, sample_id TEXT NOT NULL, suite TEXT NOT NULL, question_id TEXT NOT NULL,
    paraphrase_index INTEGER NOT NULL, condition TEXT NOT NULL, sample_index INTEGER NOT NULL,
    seed INTEGER NOT NULL, prompt_key TEXT NOT NULL, gen_key TEXT NOT NULL,
    PRIMARY KEY (run_id, sample_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS samples_gen ON samples (gen_key);
CREATE TABLE IF NOT EXISTS generations (
    gen_key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT, finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, error TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    judgment_key TEXT PRIMARY KEY, judge TEXT NOT NULL, metric TEXT NOT NULL, score REAL, label TEXT,
    mass REAL, probabilities TEXT NOT NULL, error TEXT, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
    run_id TEXT NOT NULL, sample_id TEXT NOT NULL, judge TEXT NOT NULL, metric TEXT NOT NULL,
    judgment_key TEXT NOT NULL, PRIMARY KEY (run_id, sample_id, judge, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS validations (
    identity TEXT NOT NULL, reference_sha256 TEXT NOT NULL, judge TEXT NOT NULL, created TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (identity, reference_sha256)
);
"""


class RunRecord(BaseModel):
    """A run as stored: its configuration, the package versions and what the backend reported."""

    run_id: str
    name: str | None
    model: str
    created: str
    updated: str
    config: dict
    versions: dict
    info: dict


class PendingSample(BaseModel):
    """A planned sample that still needs a generation."""

    sample_id: str
    condition: str
    seed: int
    gen_key: str
    messages: tuple[Message, ...]


class JudgeableSample(BaseModel):
    """A generated sample a judge has not scored yet."""

    sample_id: str
    suite: str
    question_id: str
    question: str
    answer: str


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """A connection to one store file; safe to reopen after a crash at any point."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        try:
            if read_only:  # reports and exports: never create or change the file
                if not self.path.is_file():
                    raise EmprobeError(f"{self.path}: no store here (run `emprobe run` first, or pass --store)")
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
                self.db.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise EmprobeError(f"{self.path}: not a usable emprobe store ({err})") from None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def _write(self, sql: str, rows: Iterable[tuple]) -> int:
        """Run `sql` for every row in one transaction; returns how many rows changed."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            before = self.db.total_changes
            self.db.executemany(sql, rows)
            self.db.execute("COMMIT")
            return self.db.total_changes - before
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ---- runs -------------------------------------------------------------------------------------

    def save_run(self, run_id: str, name: str | None, model: str, config: dict, versions: dict) -> None:
        """Create the run, or record its latest configuration when it is run again."""
        stamp = now()
        self._write(
            "INSERT INTO runs (run_id, name, model, created, updated, config, versions) VALUES (?,?,?,?,?,?,?) "
            "ON CONFLICT(run_id) DO UPDATE SET updated=excluded.updated, config=excluded.config, "
            "versions=excluded.versions, name=coalesce(excluded.name, runs.name)",
            [(run_id, name, model, stamp, stamp, json.dumps(config), json.dumps(versions))],
        )

    def update_run_info(self, run_id: str, info: dict) -> None:
        self._write("UPDATE runs SET info=? WHERE run_id=?", [(json.dumps(info), run_id)])

    def runs(self) -> list[RunRecord]:
        rows = self.db.execute("SELECT * FROM runs ORDER BY created").fetchall()
        return [self._run(r) for r in rows]

    def run(self, run_id: str) -> RunRecord:
        """A run by id, unique id prefix or name."""
        rows = self.db.execute(
            "SELECT * FROM runs WHERE run_id LIKE ? OR name = ?", (run_id + "%", run_id)
        ).fetchall()
        if len(rows) != 1:
            problem = "no run" if not rows else f"{len(rows)} runs"
            raise EmprobeError(f"{self.path}: {problem} matching {run_id!r} (see `emprobe runs list`)")
        return self._run(rows[0])

    @staticmethod
    def _run(row: tuple) -> RunRecord:
        run_id, name, model, created, updated, config, versions, info = row
        return RunRecord(run_id=run_id, name=name, model=model, created=created, updated=updated,
                         config=json.loads(config), versions=json.loads(versions), info=json.loads(info))

    # ---- samples and generations ------------------------------------------------------------------

    def add_samples(self, run_id: str, specs: Iterable[SampleSpec], chunk: int = 2000) -> int:
        """Insert planned samples (streamed, `chunk` per transaction); existing ones are left alone."""
        added, batch = 0, []
        for spec in specs:
            batch.append(spec)
            if len(batch) >= chunk:
                added += self._add_sample_batch(run_id, batch)
                batch = []
        if batch:
            added += self._add_sample_batch(run_id, batch)
        return added

    def _add_sample_batch(self, run_id: str, specs: list[SampleSpec]) -> int:
        prompts = {s.prompt_key: s.messages for s in specs}
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO prompts VALUES (?, ?)",
                [(k, json.dumps([m.model_dump() for m in msgs])) for k, msgs in prompts.items()],
            )
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, s.sample_id, s.suite, s.question_id, s.paraphrase_index, s.condition,
                  s.sample_index, s.seed, s.prompt_key, s.gen_key) for s in specs],
            )
            added = self.db.total_changes - before
            self.db.execute("COMMIT")
            return added
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def count(self, run_id: str) -> dict[str, int]:
        """Planned, generated (ok), failed generations for a run."""
        planned, generated, failed = self.db.execute(
            "SELECT count(*), count(g.gen_key) - count(g.error), count(g.error) FROM samples s "
            "LEFT JOIN generations g ON g.gen_key = s.gen_key WHERE s.run_id = ?", (run_id,)
        ).fetchone()
        return {"planned": planned, "generated": generated, "failed": failed}

    def pending_generation(self, run_id: str, chunk: int = 1024) -> Iterator[list[PendingSample]]:
        """Samples without a generation, in chunks ordered so that samples of one prompt come together."""
        after = ("", "")
        while True:
            rows = self.db.execute(
                "SELECT s.prompt_key, s.sample_id, s.condition, s.seed, s.gen_key, p.messages FROM samples s "
                "JOIN prompts p ON p.prompt_key = s.prompt_key "
                "WHERE s.run_id = ? AND (s.prompt_key, s.sample_id) > (?, ?) "
                "AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.gen_key = s.gen_key) "
                "ORDER BY s.prompt_key, s.sample_id LIMIT ?", (run_id, *after, chunk),
            ).fetchall()
            if not rows:
                return
            after = (rows[-1][0], rows[-1][1])
            yield [PendingSample(sample_id=r[1], condition=r[2], seed=r[3], gen_key=r[4],
                                 messages=tuple(Message(**m) for m in json.loads(r[5]))) for r in rows]

    def save_generations(self, model: str, results: list[GenerationResult]) -> None:
        stamp = now()
        self._write(
            "INSERT OR IGNORE INTO generations VALUES (?,?,?,?,?,?,?,?)",
            [(r.key, model, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens, r.error, stamp)
             for r in results],
        )

    # ---- judgments --------------------------------------------------------------------------------

    def pending_judging(self, run_id: str, judge: str, chunk: int = 256) -> Iterator[list[JudgeableSample]]:
        """Generated samples this judge has not scored, in chunks."""
        after = ""
        while True:
            rows = self.db.execute(
                "SELECT s.sample_id, s.suite, s.question_id, p.messages, g.text FROM samples s "
                "JOIN generations g ON g.gen_key = s.gen_key AND g.error IS NULL "
                "JOIN prompts p ON p.prompt_key = s.prompt_key "
                "WHERE s.run_id = ? AND s.sample_id > ? AND NOT EXISTS (SELECT 1 FROM scores c WHERE "
                "c.run_id = s.run_id AND c.sample_id = s.sample_id AND c.judge = ?) "
                "ORDER BY s.sample_id LIMIT ?", (run_id, after, judge, chunk),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [JudgeableSample(sample_id=r[0], suite=r[1], question_id=r[2],
                                   question=json.loads(r[3])[-1]["content"], answer=r[4]) for r in rows]

    def cached_judgments(self, keys: list[str]) -> set[str]:
        """Which of these judgment keys are stored already."""
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            found.update(k for (k,) in self.db.execute(
                f"SELECT judgment_key FROM judgments WHERE judgment_key IN ({marks})", part))
        return found

    def save_judgments(self, run_id: str, judge: str, judge_identity: str,
                       rows: list[tuple[str, str, Judgment | None]]) -> None:
        """Store (sample_id, judgment_key, judgment) rows; a None judgment reuses the cached one by key."""
        stamp = now()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT OR IGNORE INTO judgments VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, judge_identity, j.metric, j.score, j.label, j.mass, json.dumps(j.probabilities),
                  j.error, stamp) for _, key, j in rows if j is not None],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO scores SELECT ?, ?, ?, metric, judgment_key FROM judgments "
                "WHERE judgment_key = ?", [(run_id, sample_id, judge, key) for sample_id, key, _ in rows],
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def count_scored(self, run_id: str, judge: str) -> int:
        """How many of the run's samples this judge has scored."""
        return self.db.execute("SELECT count(DISTINCT sample_id) FROM scores WHERE run_id = ? AND judge = ?",
                               (run_id, judge)).fetchone()[0]

    def judges(self, run_id: str) -> list[str]:
        return [j for (j,) in self.db.execute(
            "SELECT DISTINCT judge FROM scores WHERE run_id = ? ORDER BY judge", (run_id,))]

    def scored_samples(self, run_id: str, judge: str) -> Iterator[tuple]:
        """Per sample: question, condition, and per metric (score, label, error), streamed from the store."""
        cursor = self.db.execute(
            "SELECT s.sample_id, s.question_id, s.condition, g.error, c.metric, j.score, j.label, j.error "
            "FROM samples s LEFT JOIN generations g ON g.gen_key = s.gen_key "
            "LEFT JOIN scores c ON c.run_id = s.run_id AND c.sample_id = s.sample_id AND c.judge = ? "
            "LEFT JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE s.run_id = ? ORDER BY s.sample_id", (judge, run_id),
        )
        current, metrics = None, {}
        for sample_id, question_id, condition, gen_error, metric, score, label, error in cursor:
            if current is not None and sample_id != current[0]:
                yield (*current, metrics)
                metrics = {}
            current = (sample_id, question_id, condition, gen_error)
            if metric is not None:
                metrics[metric] = (score, label, error)
        if current is not None:
            yield (*current, metrics)

    # ---- judge validations ------------------------------------------------------------------------

    def save_validation(self, identity: str, reference_sha256: str, judge: str, record: dict) -> None:
        """Keep a judge's measured agreement with one reference file (the latest measurement wins)."""
        self._write("INSERT OR REPLACE INTO validations VALUES (?,?,?,?,?)",
                    [(identity, reference_sha256, judge, now(), json.dumps(record))])

    def validation(self, identity: str) -> dict | None:
        """The most recent validation of this exact judge (its identity names its weights), if any."""
        try:
            row = self.db.execute("SELECT record FROM validations WHERE identity = ? ORDER BY created DESC LIMIT 1",
                                  (identity,)).fetchone()
        except sqlite3.OperationalError:  # a store from before validations existed, opened read-only
            return None
        return json.loads(row[0]) if row else None
