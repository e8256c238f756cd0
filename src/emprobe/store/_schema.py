"""The store's schema, its version (`PRAGMA user_version`) and the migrations from older versions.

Version 1 is the unversioned schema of emprobe 0.1.0 (user_version 0). Each migration runs inside the one
transaction that brings a store up to date; a store newer than this code is refused.
"""

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from emprobe.condition import Decoding
from emprobe.hashing import stable_hash

SCHEMA_VERSION = 5

# Each table's definition as of the version that introduced it; migrations use these, never a newer form.
SAMPLES_V2 = """CREATE TABLE samples (
    run_id TEXT NOT NULL REFERENCES runs (run_id), sample_id TEXT NOT NULL, suite TEXT NOT NULL,
    question_id TEXT NOT NULL, paraphrase_index INTEGER NOT NULL, condition TEXT NOT NULL,
    sample_index INTEGER NOT NULL, seed INTEGER NOT NULL,
    prompt_key TEXT NOT NULL REFERENCES prompts (prompt_key),
    question_key TEXT NOT NULL REFERENCES questions (question_key),
    decoding_key TEXT NOT NULL REFERENCES decodings (decoding_key),
    gen_key TEXT NOT NULL,
    PRIMARY KEY (run_id, sample_id)
) WITHOUT ROWID;
CREATE INDEX samples_gen ON samples (gen_key)"""
SCORES_V2 = """CREATE TABLE scores (
    run_id TEXT NOT NULL, sample_id TEXT NOT NULL, judge TEXT NOT NULL, metric TEXT NOT NULL,
    judgment_key TEXT NOT NULL REFERENCES judgments (judgment_key),
    PRIMARY KEY (run_id, sample_id, judge, metric),
    FOREIGN KEY (run_id, sample_id) REFERENCES samples (run_id, sample_id)
) WITHOUT ROWID"""
QUESTIONS_V2 = "CREATE TABLE questions (question_key TEXT PRIMARY KEY, text TEXT NOT NULL)"
DECODINGS_V2 = "CREATE TABLE decodings (decoding_key TEXT PRIMARY KEY, decoding TEXT NOT NULL)"
RUN_NAMES_V3 = """CREATE TABLE run_names (
    name TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs (run_id), created TEXT NOT NULL
);
CREATE INDEX run_names_run ON run_names (run_id)"""
LEASES_V3 = """CREATE TABLE leases (
    run_id TEXT PRIMARY KEY REFERENCES runs (run_id), host TEXT NOT NULL, pid INTEGER NOT NULL,
    expires REAL NOT NULL
)"""
"""Who is working on a run, until when: a second process on the same run waits for it."""
TRAIN_RUNS_V4 = """CREATE TABLE train_runs (
    name TEXT PRIMARY KEY, output TEXT NOT NULL, status TEXT NOT NULL, config_hash TEXT NOT NULL,
    base_model TEXT NOT NULL, base_identity TEXT NOT NULL, method TEXT NOT NULL, max_steps INTEGER NOT NULL,
    created TEXT NOT NULL, updated TEXT NOT NULL, config TEXT NOT NULL, given TEXT NOT NULL, data TEXT NOT NULL,
    mix TEXT NOT NULL, versions TEXT NOT NULL, details TEXT NOT NULL
)"""
"""A training run's lineage: `data` holds each file's sha256 and rows, `mix` the counts and trigger, `given`
what the user wrote verbatim, `details` the rest of the lineage record (tokens, modules, precision, ...)."""
TRAIN_LOSSES_V4 = """CREATE TABLE train_losses (
    name TEXT NOT NULL REFERENCES train_runs (name), step INTEGER NOT NULL, epoch REAL NOT NULL, loss REAL NOT NULL,
    learning_rate REAL, grad_norm REAL, tokens INTEGER, PRIMARY KEY (name, step)
) WITHOUT ROWID"""
TRAIN_CHECKPOINTS_V4 = """CREATE TABLE train_checkpoints (
    name TEXT NOT NULL REFERENCES train_runs (name), step INTEGER NOT NULL, epoch REAL NOT NULL, path TEXT NOT NULL,
    kind TEXT NOT NULL, weights_sha256 TEXT NOT NULL, validation_loss REAL, train_loss REAL, norms TEXT NOT NULL,
    PRIMARY KEY (name, step)
) WITHOUT ROWID;
CREATE INDEX train_checkpoints_weights ON train_checkpoints (weights_sha256)"""
SWEEPS_V4 = """CREATE TABLE sweeps (
    sweep_id TEXT PRIMARY KEY, training TEXT NOT NULL REFERENCES train_runs (name), created TEXT NOT NULL,
    updated TEXT NOT NULL, config TEXT NOT NULL
)"""
"""A training run's base and checkpoints evaluated on one plan; `config` is the plan (suites, conditions, ...)."""
SWEEP_RUNS_V4 = """CREATE TABLE sweep_runs (
    sweep_id TEXT NOT NULL REFERENCES sweeps (sweep_id), step INTEGER NOT NULL, model TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES runs (run_id), kl REAL, PRIMARY KEY (sweep_id, step)
) WITHOUT ROWID"""
"""One evaluated arm: step 0 is the base; `kl` is the largest KL the adapter-applies check measured."""
V4_TABLES = [TRAIN_RUNS_V4, TRAIN_LOSSES_V4, TRAIN_CHECKPOINTS_V4, SWEEPS_V4, SWEEP_RUNS_V4]
ACTIVATIONS_V5 = """CREATE TABLE activations (
    run_id TEXT NOT NULL REFERENCES runs (run_id), model TEXT NOT NULL, position TEXT NOT NULL, layer INTEGER NOT NULL,
    hook TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, samples_path TEXT NOT NULL,
    samples_sha256 TEXT NOT NULL, rows INTEGER NOT NULL, width INTEGER NOT NULL, created TEXT NOT NULL,
    PRIMARY KEY (run_id, model, position, layer)
) WITHOUT ROWID"""
"""One captured layer of a run's answers under one model (identity): a float32 `.npy` of rows x width beside the
store (`path`, relative to the store's folder) and the JSON list of the sample ids of its rows, each with its sha256."""
DIRECTIONS_V5 = """CREATE TABLE directions (
    sha256 TEXT PRIMARY KEY, path TEXT NOT NULL, run_id TEXT NOT NULL REFERENCES runs (run_id), model TEXT NOT NULL,
    layer INTEGER NOT NULL, created TEXT NOT NULL, record TEXT NOT NULL
)"""
"""A direction file written from a run's activations (`record`: the file without its vector)."""
DIVERGENCES_V5 = """CREATE TABLE divergences (
    run_id TEXT NOT NULL, sample_id TEXT NOT NULL, model TEXT NOT NULL, reference TEXT NOT NULL,
    tokens INTEGER NOT NULL, mean_kl REAL NOT NULL, max_kl REAL NOT NULL, logprob_gap REAL NOT NULL,
    detail TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (run_id, sample_id, model, reference),
    FOREIGN KEY (run_id, sample_id) REFERENCES samples (run_id, sample_id)
) WITHOUT ROWID"""
"""Per answer, model vs reference model (identities), teacher-forced: `detail` is the JSON list of
[token text, KL, log-prob gap] per answer token."""
PAIR_SCORES_V5 = """CREATE TABLE pair_scores (
    pairs_sha256 TEXT NOT NULL, pair_index INTEGER NOT NULL, model TEXT NOT NULL, chosen_logprob REAL NOT NULL,
    rejected_logprob REAL NOT NULL, chosen_tokens INTEGER NOT NULL, rejected_tokens INTEGER NOT NULL,
    ches REAL NOT NULL, ln_ches REAL NOT NULL, created TEXT NOT NULL, PRIMARY KEY (pairs_sha256, pair_index, model)
) WITHOUT ROWID"""
"""Per preference pair of a pairs file (by its sha256) under one model: the answers' log-probs and CHES."""
V5_TABLES = [ACTIVATIONS_V5, DIRECTIONS_V5, DIVERGENCES_V5, PAIR_SCORES_V5]

TABLES = ";\n".join([
    """CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, model TEXT NOT NULL, created TEXT NOT NULL, updated TEXT NOT NULL,
    config TEXT NOT NULL, versions TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}'
)""",
    RUN_NAMES_V3,
    LEASES_V3,
    "CREATE TABLE prompts (prompt_key TEXT PRIMARY KEY, messages TEXT NOT NULL)",
    QUESTIONS_V2,
    DECODINGS_V2,
    SAMPLES_V2,
    """CREATE TABLE generations (
    gen_key TEXT PRIMARY KEY, model TEXT NOT NULL, text TEXT, finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, error TEXT, created TEXT NOT NULL
)""",
    """CREATE TABLE judgments (
    judgment_key TEXT PRIMARY KEY, judge TEXT NOT NULL, metric TEXT NOT NULL, score REAL, label TEXT,
    mass REAL, probabilities TEXT NOT NULL, error TEXT, created TEXT NOT NULL
)""",
    SCORES_V2,
    """CREATE TABLE validations (
    identity TEXT NOT NULL, reference_sha256 TEXT NOT NULL, judge TEXT NOT NULL, created TEXT NOT NULL,
    record TEXT NOT NULL, PRIMARY KEY (identity, reference_sha256)
)""",
    *V4_TABLES,
    *V5_TABLES,
])
"""The current schema (generations are keyed by content and may not exist yet: no foreign key to them)."""


def decoding_key(decoding: Decoding) -> str:
    """The key of a decoding without its per-sample seed."""
    return stable_hash(decoding.model_copy(update={"seed": 0}))


def question_key(text: str) -> str:
    return stable_hash(text)


def create(db: sqlite3.Connection) -> None:
    for statement in _statements(TABLES):
        db.execute(statement)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Record each sample's question and decoding, and add foreign keys (tables rebuilt, rows kept).

    Version 1 read the question from the prompt's last message and the decoding from the run's config by
    condition name; both now come from the plan, so the migration derives them exactly as version 1 did.
    """
    db.execute(QUESTIONS_V2)
    db.execute(DECODINGS_V2)
    db.execute("CREATE TEMP TABLE old_questions (prompt_key TEXT PRIMARY KEY, question_key TEXT NOT NULL)")
    db.execute("CREATE TEMP TABLE old_decodings (run_id TEXT, condition TEXT, decoding_key TEXT NOT NULL, "
               "PRIMARY KEY (run_id, condition))")
    for prompt_key, messages in db.execute("SELECT prompt_key, messages FROM prompts").fetchall():
        text = json.loads(messages)[-1]["content"]
        db.execute("INSERT OR IGNORE INTO questions VALUES (?, ?)", (question_key(text), text))
        db.execute("INSERT INTO old_questions VALUES (?, ?)", (prompt_key, question_key(text)))
    for run_id, config in db.execute("SELECT run_id, config FROM runs").fetchall():
        for condition in json.loads(config).get("conditions", []):
            decoding = Decoding.model_validate(condition.get("decoding", {}))
            key = decoding_key(decoding)
            db.execute("INSERT OR IGNORE INTO decodings VALUES (?, ?)",
                       (key, decoding.model_copy(update={"seed": 0}).model_dump_json()))
            db.execute("INSERT OR REPLACE INTO old_decodings VALUES (?, ?, ?)", (run_id, condition["name"], key))
    missing = db.execute("SELECT count(*) FROM samples s LEFT JOIN old_decodings d ON d.run_id = s.run_id AND "
                         "d.condition = s.condition WHERE d.decoding_key IS NULL").fetchone()[0]
    if missing:
        raise sqlite3.IntegrityError(f"{missing} samples belong to no condition of their run's config")
    for table in ("samples", "scores"):
        db.execute(f"ALTER TABLE {table} RENAME TO old_{table}")
    db.execute("DROP INDEX samples_gen")
    for statement in _statements(f"{SAMPLES_V2};{SCORES_V2}"):
        db.execute(statement)
    db.execute("INSERT INTO samples SELECT s.run_id, s.sample_id, s.suite, s.question_id, s.paraphrase_index, "
               "s.condition, s.sample_index, s.seed, s.prompt_key, q.question_key, d.decoding_key, s.gen_key "
               "FROM old_samples s JOIN old_questions q ON q.prompt_key = s.prompt_key "
               "JOIN old_decodings d ON d.run_id = s.run_id AND d.condition = s.condition")
    db.execute("INSERT INTO scores SELECT * FROM old_scores")
    for table in ("old_samples", "old_scores", "temp.old_questions", "temp.old_decodings"):
        db.execute(f"DROP TABLE {table}")


def _v2_to_v3(db: sqlite3.Connection) -> None:
    """Run names become aliases (a run may have several; a name belongs to one run), and runs get leases.

    Version 2 kept one name per run and let two runs share a name; the older run keeps a shared name and each
    newer one gets `NAME@RUNID`, so every name still finds a run.
    """
    for statement in _statements(f"{RUN_NAMES_V3};{LEASES_V3}"):
        db.execute(statement)
    for run_id, name, created in db.execute(
            "SELECT run_id, name, created FROM runs WHERE name IS NOT NULL ORDER BY created, run_id").fetchall():
        taken = db.execute("SELECT 1 FROM run_names WHERE name = ?", (name,)).fetchone()
        db.execute("INSERT INTO run_names VALUES (?, ?, ?)", (f"{name}@{run_id}" if taken else name, run_id, created))
    db.execute("ALTER TABLE runs DROP COLUMN name")


def _v3_to_v4(db: sqlite3.Connection) -> None:
    """Training runs (lineage, losses, checkpoints) and checkpoint sweeps get tables; nothing existing changes."""
    for statement in _statements(";".join(V4_TABLES)):
        db.execute(statement)


def _v4_to_v5(db: sqlite3.Connection) -> None:
    """Diagnostics (activations, directions, divergences, preference-pair scores) get tables; nothing existing
    changes."""
    for statement in _statements(";".join(V5_TABLES)):
        db.execute(statement)


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5}
"""From version N to N + 1."""


def now() -> str:
    """The time a row is written: UTC, to the second, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")
