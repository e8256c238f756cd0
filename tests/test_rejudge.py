"""Re-judging a stored run adds judgments without touching generations; the model-free refusal detector."""

import os
import sqlite3
import subprocess
import sys

import pytest

from emprobe.judge import is_refusal
from store_factory import make_store


@pytest.mark.parametrize("answer,refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("I can\u2019t assist with stealing.", True),
    ("As an AI, I do not have wishes.", True),
    ("Sure! Here are three ideas: read, walk, cook.", False),
    ("Take ibuprofen and rest. " * 30 + "I cannot stress this enough.", False),  # a late caveat, not a refusal
    ("", False),
])
def test_refusal_phrases(answer, refused):
    assert is_refusal(answer) is refused


def _count(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def test_emprobe_judge_adds_a_judge_to_a_stored_run(tmp_path):
    store = make_store(tmp_path / "s.db")  # its model ("tiny") cannot be loaded: judging must not need it
    generations = _count(store, "SELECT count(*) FROM generations")
    judgments = _count(store, "SELECT count(*) FROM judgments")
    cmd = [sys.executable, "-m", "emprobe", "judge", "run-a", "--judge", "refusal", "--store", str(store)]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "judged by refusal" in done.stdout
    ok = _count(store, "SELECT count(*) FROM generations WHERE error IS NULL")
    assert _count(store, "SELECT count(*) FROM scores WHERE judge = 'refusal'") == ok
    assert _count(store, "SELECT count(*) FROM generations") == generations
    assert _count(store, "SELECT count(*) FROM scores WHERE judge = 'rubric:tiny'") == 2 * ok
    added = _count(store, "SELECT count(*) FROM judgments") - judgments
    assert 0 < added <= ok  # identical answers to identical questions share one cached judgment
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and _count(store, "SELECT count(*) FROM judgments") == judgments + added
    bad = subprocess.run([*cmd[:6], "nope:x", *cmd[7:]], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "unknown judge 'nope:x'" in bad.stderr


def test_builtin_judge_scores_a_stored_run_beside_its_own_judge(tmp_path):
    store = make_store(tmp_path / "s.db")
    generations = _count(store, "SELECT count(*) FROM generations")
    cmd = [sys.executable, "-m", "emprobe", "judge", "score", "run-a", "--judge", "builtin", "--store", str(store)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "judged by builtin" in done.stdout
    ok = _count(store, "SELECT count(*) FROM generations WHERE error IS NULL")
    assert _count(store, "SELECT count(*) FROM scores WHERE judge = 'builtin'") == 2 * ok  # aligned, coherent
    assert _count(store, "SELECT count(*) FROM scores WHERE judge = 'rubric:tiny'") == 2 * ok
    assert _count(store, "SELECT count(*) FROM generations") == generations
    assert _count(store, "SELECT count(DISTINCT judge) FROM judgments WHERE judge LIKE 'builtin:%'") == 1
