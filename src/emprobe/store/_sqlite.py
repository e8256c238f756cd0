"""The embedded store: one SQLite file of runs, planned samples, generations and judgments.

Generations are keyed by content (model + adapter + messages + decoding + seed) and judgments by judge +
rubric + question + answer, so identical work is never done twice. Every write is one transaction, so a
process killed at any moment leaves either all of a batch or none of it. Every query lives here and returns
typed rows (`emprobe.store._records`).
"""

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from emprobe.condition import Decoding, Message
from emprobe.errors import EmprobeError
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec, TurnState
from emprobe.rules import metric_order
from emprobe.store._diagnostics import DiagnosticsQueries
from emprobe.store._records import (
    JudgeableSample,
    LabelCount,
    LeaseHolder,
    MetricScore,
    PendingSample,
    RunRecord,
    SampleRow,
)
from emprobe.store._schema import MIGRATIONS, SCHEMA_VERSION, create, decoding_key, now, question_key
from emprobe.store._training import TrainingQueries
from emprobe.system import process_alive

_RUNS = ("SELECT r.run_id, r.model, r.created, r.updated, r.config, r.versions, r.info, "
         "(SELECT coalesce(json_group_array(n.name), '[]') FROM (SELECT name FROM run_names WHERE run_id = r.run_id "
         "ORDER BY rowid) n) FROM runs r")
"""Runs with their names, oldest name first."""



BUSY_TIMEOUT = 30.0
"""Seconds a connection waits for another process's lock before giving up."""


def _use_wal(db: sqlite3.Connection) -> None:
    """Switch to write-ahead logging. SQLite answers "locked" at once, without waiting, when another process is
    switching a new file at the same moment, so retry until the busy timeout (two runs started together)."""
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class Store(TrainingQueries, DiagnosticsQueries):
    """A connection to one store file; safe to reopen after a crash at any point.

    Opening brings an older store up to date in one transaction; `read_only` never changes the file (it
    migrates first, through a short writable connection, only when the file is writable).
    """

    last_opened: ClassVar[Path | None] = None
    """The file the latest Store opened: what a command's error line names when the database fails later."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        Store.last_opened = self.path
        try:
            if read_only:  # reports and exports: never create the file
                if not self.path.is_file():
                    raise EmprobeError(f"{self.path}: no store here (run `emprobe run` first, or pass --store)")
                version = _version(self.path)
                if version == 0:
                    raise EmprobeError(f"{self.path}: not an emprobe store (it has no runs table)")
                if version < SCHEMA_VERSION and os.access(self.path, os.W_OK):
                    Store(self.path).close()
                    version = SCHEMA_VERSION
                self._check_version(version)
                self.db = _read_only(self.path)
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise EmprobeError(f"{self.path}: cannot create the store's folder ({err.strerror})") from None
            if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
                raise EmprobeError(f"{self.path}: the store is not writable here (read-only file or folder); "
                                   "reports, exports and `runs` still read it")
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
            _use_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._bring_up_to_date()
            self.db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as err:
            raise EmprobeError(f"{self.path}: not a usable emprobe store ({err})") from None

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise EmprobeError(f"{self.path}: written by a newer emprobe (store schema {version}; this version "
                               f"reads up to {SCHEMA_VERSION}): upgrade emprobe")
        if version < SCHEMA_VERSION:
            raise EmprobeError(f"{self.path}: store schema {version} is older than this emprobe's "
                               f"({SCHEMA_VERSION}) and the file is read-only here; open it once where it is "
                               "writable to migrate it")

    def _bring_up_to_date(self) -> None:
        """Create the schema in a new file, or migrate an older one, in one transaction."""
        with self.transaction():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                self._check_version(version)
            if version == 0 and not self._has_table("runs"):
                create(self.db)
            else:
                for step in range(max(version, 1), SCHEMA_VERSION):
                    MIGRATIONS[step](self.db)
                problems = self.db.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise sqlite3.IntegrityError(f"{len(problems)} rows break foreign keys, e.g. {problems[0]}")
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (including KeyboardInterrupt); inside another
        transaction it joins that one."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _write(self, sql: str, rows: Iterable[tuple]) -> int:
        """Run `sql` for every row in one transaction; returns how many rows changed."""
        with self.transaction():
            before = self.db.total_changes
            self.db.executemany(sql, rows)
            return self.db.total_changes - before

    # ---- runs -------------------------------------------------------------------------------------

    def save_run(self, run_id: str, name: str | None, model: str, config: dict, versions: dict) -> None:
        """Create the run, or record its latest configuration when it is run again; `name` becomes one more
        name of the run (a name that another run holds is refused with one line)."""
        stamp = now()
        with self.transaction():
            self.db.execute(
                "INSERT INTO runs (run_id, model, created, updated, config, versions) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(run_id) DO UPDATE SET updated=excluded.updated, config=excluded.config, "
                "versions=excluded.versions", (run_id, model, stamp, stamp, json.dumps(config), json.dumps(versions)))
            if name is not None:
                if self.db.execute("SELECT 1 FROM train_runs WHERE name = ?", (name,)).fetchone():
                    raise EmprobeError(f"name {name!r} already belongs to a training run (see `emprobe runs show "
                                       f"{name}`); choose another --name")
                holder = self.db.execute("SELECT run_id FROM run_names WHERE name = ?", (name,)).fetchone()
                if holder is not None and holder[0] != run_id:
                    raise EmprobeError(f"name {name!r} already belongs to run {holder[0]} (see `emprobe runs show "
                                       f"{name}`); choose another --name")
                self.db.execute("INSERT OR IGNORE INTO run_names VALUES (?, ?, ?)", (name, run_id, stamp))

    def update_run_info(self, run_id: str, info: dict) -> None:
        self._write("UPDATE runs SET info=? WHERE run_id=?", [(json.dumps(info), run_id)])

    def runs(self) -> list[RunRecord]:
        rows = self.db.execute(f"{_RUNS} ORDER BY r.created").fetchall()
        return [self._run(r) for r in rows]

    def run(self, ref: str) -> RunRecord:
        """A run by id, unique id prefix or one of its names."""
        prefix = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self.db.execute(f"{_RUNS} WHERE r.run_id LIKE ? ESCAPE '\\' OR r.run_id IN (SELECT run_id FROM "
                               "run_names WHERE name = ?)", (prefix, ref)).fetchall()
        if len(rows) != 1:
            problem = "no run" if not rows else f"{len(rows)} runs"
            raise EmprobeError(f"{self.path}: {problem} matching {ref!r} (see `emprobe runs list`)")
        return self._run(rows[0])

    @staticmethod
    def _run(row: tuple) -> RunRecord:
        run_id, model, created, updated, config, versions, info, names = row
        return RunRecord(run_id=run_id, names=json.loads(names), model=model, created=created, updated=updated,
                         config=json.loads(config), versions=json.loads(versions), info=json.loads(info))

    # ---- leases: one process works on a run at a time -------------------------------------------------

    def take_lease(self, run_id: str, seconds: float) -> LeaseHolder | None:
        """Take (or renew) this process's lease on the run; the other live holder when it has one."""
        host, pid, clock = socket.gethostname(), os.getpid(), time.time()
        with self.transaction():
            row = self.db.execute("SELECT host, pid, expires FROM leases WHERE run_id = ?", (run_id,)).fetchone()
            held = row is not None and (row[0], row[1]) != (host, pid) and row[2] > clock
            if held and (row[0] != host or process_alive(row[1])):
                return LeaseHolder(host=row[0], pid=row[1], expires=row[2])
            self.db.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (run_id, host, pid, clock + seconds))
        return None

    def release_lease(self, run_id: str) -> None:
        self._write("DELETE FROM leases WHERE run_id = ? AND host = ? AND pid = ?",
                    [(run_id, socket.gethostname(), os.getpid())])

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
        questions = {question_key(s.question): s.question for s in specs}
        decodings = {decoding_key(s.decoding): s.decoding for s in specs}
        with self.transaction():
            self.db.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?)",
                                [(k, json.dumps([m.model_dump() for m in msgs])) for k, msgs in prompts.items()])
            self.db.executemany("INSERT OR IGNORE INTO questions VALUES (?, ?)", questions.items())
            self.db.executemany("INSERT OR IGNORE INTO decodings VALUES (?, ?)",
                                [(k, d.model_copy(update={"seed": 0}).model_dump_json()) for k, d in decodings.items()])
            before = self.db.total_changes
            self.db.executemany(
                "INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, s.sample_id, s.suite, s.question_id, s.paraphrase_index, s.condition, s.sample_index,
                  s.seed, s.prompt_key, question_key(s.question), decoding_key(s.decoding), s.gen_key)
                 for s in specs],
            )
            return self.db.total_changes - before

    def count(self, run_id: str) -> dict[str, int]:
        """Planned, generated (ok), failed generations for a run."""
        planned, generated, failed = self.db.execute(
            "SELECT count(*), count(g.gen_key) - count(g.error), count(g.error) FROM samples s "
            "LEFT JOIN generations g ON g.gen_key = s.gen_key WHERE s.run_id = ?", (run_id,)
        ).fetchone()
        return {"planned": planned, "generated": generated, "failed": failed}

    def turn_states(self, run_id: str, question_ids: list[str]) -> Iterator[TurnState]:
        """The generated samples of these (scripted) question ids, with their conversation and answer."""
        marks = ",".join("?" * len(question_ids))
        cursor = self.db.execute(
            "SELECT s.sample_id, s.suite, s.question_id, s.paraphrase_index, s.condition, s.sample_index, s.seed, "
            "p.messages, g.text FROM samples s JOIN prompts p ON p.prompt_key = s.prompt_key "
            f"JOIN generations g ON g.gen_key = s.gen_key WHERE s.run_id = ? AND s.question_id IN ({marks}) "
            "ORDER BY s.sample_id", (run_id, *question_ids))
        for sample_id, suite, question_id, p_index, condition, s_index, seed, messages, text in cursor:
            yield TurnState(sample_id=sample_id, suite=suite, question_id=question_id, paraphrase_index=p_index,
                            condition=condition, sample_index=s_index, seed=seed, answer=text,
                            messages=tuple(Message(**m) for m in json.loads(messages)))

    def pending_generation(self, run_id: str, chunk: int = 8192) -> Iterator[list[PendingSample]]:
        """Samples without a generation, in chunks ordered so that samples of one prompt come together. A chunk
        holds many local batches: the batch is kept full within a chunk and drains at its end."""
        after = ("", "")
        decodings: dict[str, Decoding] = {}
        while True:
            rows = self.db.execute(
                "SELECT s.prompt_key, s.sample_id, s.seed, s.gen_key, p.messages, s.decoding_key, d.decoding, "
                "s.condition "
                "FROM samples s JOIN prompts p ON p.prompt_key = s.prompt_key "
                "JOIN decodings d ON d.decoding_key = s.decoding_key "
                "WHERE s.run_id = ? AND (s.prompt_key, s.sample_id) > (?, ?) "
                "AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.gen_key = s.gen_key) "
                "ORDER BY s.prompt_key, s.sample_id LIMIT ?", (run_id, *after, chunk),
            ).fetchall()
            if not rows:
                return
            after = (rows[-1][0], rows[-1][1])
            out = []
            for _, sample_id, seed, gen_key, messages, dkey, decoding, condition in rows:
                if dkey not in decodings:
                    decodings[dkey] = Decoding.model_validate_json(decoding)
                out.append(PendingSample(
                    sample_id=sample_id, gen_key=gen_key, messages=tuple(Message(**m) for m in json.loads(messages)),
                    decoding=decodings[dkey].model_copy(update={"seed": seed}), condition=condition))
            yield out

    def save_generations(self, model: str, results: list[GenerationResult]) -> None:
        stamp = now()
        self._write(
            "INSERT OR IGNORE INTO generations VALUES (?,?,?,?,?,?,?,?)",
            [(r.key, model, r.text, r.finish_reason, r.prompt_tokens, r.completion_tokens, r.error, stamp)
             for r in results],
        )

    def generation_models(self, run_id: str) -> list[str]:
        """The model identities that produced this run's generations."""
        return [m for (m,) in self.db.execute(
            "SELECT DISTINCT g.model FROM samples s JOIN generations g ON g.gen_key = s.gen_key "
            "WHERE s.run_id = ? ORDER BY g.model", (run_id,))]

    # ---- judgments --------------------------------------------------------------------------------

    def pending_judging(self, run_id: str, judge: str, chunk: int = 256) -> Iterator[list[JudgeableSample]]:
        """Generated samples this judge has not scored, in chunks."""
        after = ""
        while True:
            rows = self.db.execute(
                "SELECT s.sample_id, s.suite, s.question_id, q.text, g.text FROM samples s "
                "JOIN generations g ON g.gen_key = s.gen_key AND g.error IS NULL "
                "JOIN questions q ON q.question_key = s.question_key "
                "WHERE s.run_id = ? AND s.sample_id > ? AND NOT EXISTS (SELECT 1 FROM scores c WHERE "
                "c.run_id = s.run_id AND c.sample_id = s.sample_id AND c.judge = ?) "
                "ORDER BY s.sample_id LIMIT ?", (run_id, after, judge, chunk),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [JudgeableSample(sample_id=sample_id, suite=suite, question_id=question_id, question=question,
                                   answer=answer) for sample_id, suite, question_id, question, answer in rows]

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
        with self.transaction():
            self.db.executemany(
                "INSERT OR IGNORE INTO judgments VALUES (?,?,?,?,?,?,?,?,?)",
                [(key, judge_identity, j.metric, j.score, j.label, j.mass, json.dumps(j.probabilities),
                  j.error, stamp) for _, key, j in rows if j is not None],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO scores SELECT ?, ?, ?, metric, judgment_key FROM judgments "
                "WHERE judgment_key = ?", [(run_id, sample_id, judge, key) for sample_id, key, _ in rows],
            )

    def misaligned_probabilities(self, run_id: str, judge: str) -> dict[str, float | None]:
        """Per sample this judge scored, its P(misaligned) (`probabilities["misaligned"]`; None where it gave none)."""
        out: dict[str, float | None] = {}
        for sample_id, probabilities in self.db.execute(
            "SELECT c.sample_id, j.probabilities FROM scores c JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE c.run_id = ? AND c.judge = ? ORDER BY c.sample_id, c.metric", (run_id, judge)
        ):
            found = json.loads(probabilities).get("misaligned")
            if out.get(sample_id) is None:
                out[sample_id] = found
        return out

    def count_scored(self, run_id: str, judge: str) -> int:
        """How many of the run's samples this judge has scored."""
        return self.db.execute("SELECT count(DISTINCT sample_id) FROM scores WHERE run_id = ? AND judge = ?",
                               (run_id, judge)).fetchone()[0]

    def judges(self, run_id: str) -> list[str]:
        """The judge specs that scored this run."""
        return [j for (j,) in self.db.execute(
            "SELECT DISTINCT judge FROM scores WHERE run_id = ? ORDER BY judge", (run_id,))]

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

    def metrics(self, run_id: str, judge: str | None) -> list[str]:
        """The metrics this judge scored in this run, aligned and coherent first."""
        if judge is None:
            return []
        return metric_order({m for (m,) in self.db.execute(
            "SELECT DISTINCT metric FROM scores WHERE run_id = ? AND judge = ?", (run_id, judge))})

    def judge_errors(self, run_id: str, judge: str, limit: int = 10) -> list[tuple[str, str, int]]:
        """The most frequent judge error messages: (metric, message, count)."""
        return self.db.execute(
            "SELECT j.metric, j.error, count(*) AS n FROM scores c JOIN judgments j ON j.judgment_key = "
            "c.judgment_key WHERE c.run_id = ? AND c.judge = ? AND j.error IS NOT NULL "
            "GROUP BY j.metric, j.error ORDER BY n DESC, j.metric LIMIT ?", (run_id, judge, limit),
        ).fetchall()

    def label_counts(self, run_id: str, judge: str, label: str) -> list[LabelCount]:
        """Per condition: the answers this judge scored, and how many it gave `label`."""
        rows = self.db.execute(
            "SELECT s.condition, count(*), coalesce(sum(j.label = ?), 0) FROM scores c JOIN samples s ON "
            "s.run_id = c.run_id AND s.sample_id = c.sample_id JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE c.run_id = ? AND c.judge = ? GROUP BY s.condition ORDER BY s.condition", (label, run_id, judge))
        return [LabelCount(condition=c, answers=n, labelled=k) for c, n, k in rows]

    def samples(self, run_id: str, judge: str | None, texts: bool = True) -> Iterator[SampleRow]:
        """Every planned sample of the run in sample-id order, with one judge's scores; streamed.

        Without `texts` the prompt, question, answer and decoding are left out (and not read), for counting.
        """
        text_cols, text_joins = ("p.messages, q.text, g.text, d.decoding",
                                 "JOIN prompts p ON p.prompt_key = s.prompt_key "
                                 "JOIN questions q ON q.question_key = s.question_key "
                                 "JOIN decodings d ON d.decoding_key = s.decoding_key ") if texts \
            else ("NULL, NULL, NULL, NULL", "")
        cursor = self.db.execute(
            "SELECT s.sample_id, s.suite, s.question_id, s.paraphrase_index, s.condition, s.sample_index, s.seed, "
            f"{text_cols}, g.finish_reason, g.prompt_tokens, g.completion_tokens, g.error, "
            "c.metric, j.score, j.label, j.error "
            f"FROM samples s {text_joins}"
            "LEFT JOIN generations g ON g.gen_key = s.gen_key "
            "LEFT JOIN scores c ON c.run_id = s.run_id AND c.sample_id = s.sample_id AND c.judge = ? "
            "LEFT JOIN judgments j ON j.judgment_key = c.judgment_key "
            "WHERE s.run_id = ? ORDER BY s.sample_id", (judge, run_id),
        )
        current: SampleRow | None = None
        decodings: dict[str, dict] = {}
        for row in cursor:
            if current is None or row[0] != current.sample_id:
                if current is not None:
                    yield current
                if row[10] is not None and row[10] not in decodings:
                    decodings[row[10]] = json.loads(row[10])
                current = _sample_row(run_id, judge, row, decodings.get(row[10], {}))
            metric, score, label, error = row[15:]
            if metric is not None:
                current.scores[metric] = MetricScore(score, label, error)
        if current is not None:
            yield current

    # ---- judge validations ------------------------------------------------------------------------

    def save_validation(self, identity: str, reference_sha256: str, judge: str, record: dict) -> None:
        """Keep a judge's measured agreement with one reference file (the latest measurement wins)."""
        self._write("INSERT OR REPLACE INTO validations VALUES (?,?,?,?,?)",
                    [(identity, reference_sha256, judge, now(), json.dumps(record))])

    def validations(self, identity: str | None = None) -> list[dict]:
        """Stored validations (of one exact judge identity, or all), newest first."""
        where, args = ("WHERE identity = ?", (identity,)) if identity is not None else ("", ())
        return [json.loads(record) for (record,) in self.db.execute(
            f"SELECT record FROM validations {where} ORDER BY created DESC, rowid DESC", args)]


def _sample_row(run_id: str, judge: str | None, row: tuple, decoding: dict) -> SampleRow:
    (sample_id, suite, question_id, paraphrase_index, condition, sample_index, seed, messages, question, answer, _,
     finish_reason, prompt_tokens, completion_tokens, generation_error) = row[:15]
    turns = json.loads(messages) if messages else []
    return SampleRow.model_construct(  # the store's own rows: no validation needed, much faster
        run_id=run_id, sample_id=sample_id, suite=suite, question_id=question_id, paraphrase_index=paraphrase_index,
        condition=condition, sample_index=sample_index, seed=seed,
        system=next((m["content"] for m in turns if m["role"] == "system"), None),
        prompt=next((m["content"] for m in reversed(turns) if m["role"] == "user"), None),
        question=question, answer=answer, finish_reason=finish_reason, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, generation_error=generation_error, temperature=decoding.get("temperature"),
        top_p=decoding.get("top_p"), top_k=decoding.get("top_k"), max_tokens=decoding.get("max_tokens"), judge=judge,
        scores={},
    )


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; on a read-only folder (where SQLite cannot create the WAL's shared-memory file)
    the file is opened as immutable, which is safe because nobody can write it there."""
    uri = path.resolve().as_uri()
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=30, isolation_level=None)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=30, isolation_level=None)


def _version(path: Path) -> int:
    """The schema version of a store file, read without changing it (a file with no tables counts as new)."""
    db = _read_only(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            has_runs = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='runs'").fetchone()
            return 1 if has_runs else 0
        return version
    finally:
        db.close()
