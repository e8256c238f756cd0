"""kill -9 a real `emprobe run` while it generates and while it judges; rerun; nothing lost or duplicated."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import yaml

SUITE = {"name": "killme", "questions": [
    {"id": f"q{i}", "paraphrases": [f"Question number {i}?", f"Another wording {i}?"]} for i in range(4)
]}


def _count(db, sql):
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def _start(args):
    return subprocess.Popen([sys.executable, "-m", "emprobe", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})


def _kill_when(proc, db, sql, low, timeout=240):
    """SIGKILL the run as soon as `sql` counts more than `low` rows; True if it was killed mid-stage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _count(db, sql) > low:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    proc.wait()
    return False


def test_sigkill_during_generation_and_judging_then_resume(tiny_llama, tmp_path):
    suite_file = tmp_path / "killme.yaml"
    suite_file.write_text(yaml.safe_dump(SUITE))
    db = tmp_path / "runs.db"
    args = ["--model", str(tiny_llama), "--judge", f"rubric:{tiny_llama}", "--suite", str(suite_file),
            "--samples", "40", "--max-tokens", "48", "--batch-size", "4", "--store", str(db)]
    planned = 4 * 2 * 40

    killed_generating = _kill_when(_start(args), db, "SELECT count(*) FROM generations", 0)
    generated = _count(db, "SELECT count(*) FROM generations")
    assert killed_generating and 0 < generated < planned

    killed_judging = _kill_when(_start(args), db, "SELECT count(*) FROM scores", 0)
    assert killed_judging
    assert _count(db, "SELECT count(*) FROM generations") == planned  # generation finished before judging
    assert 0 < _count(db, "SELECT count(DISTINCT sample_id) FROM scores") < planned

    final = _start(args)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out.decode()[-2000:]
    assert _count(db, "SELECT count(*) FROM samples") == planned
    assert _count(db, "SELECT count(DISTINCT sample_id) FROM samples") == planned
    assert _count(db, "SELECT count(*) FROM samples s JOIN generations g ON g.gen_key = s.gen_key") == planned
    assert _count(db, "SELECT count(*) FROM (SELECT gen_key FROM samples GROUP BY gen_key HAVING count(*) > 1)") == 0
    assert _count(db, "SELECT count(*) FROM scores") == planned * 2  # aligned + coherent, once each
    assert _count(db, "SELECT count(*) FROM samples s WHERE (SELECT count(*) FROM scores c "
                      "WHERE c.sample_id = s.sample_id) != 2") == 0
    assert "(all)" in out.decode()
