"""Every bad input gets one line naming the file or option and the real cause, before any work, and loses
nothing already stored: real subprocesses where the fault can be made for real, injected where it cannot."""

import os
import sqlite3
import subprocess
import sys

import pytest

from emprobe.store import Store
from store_factory import make_store


def emprobe(*args, **env):
    return subprocess.run([sys.executable, "-m", "emprobe", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **env})


def one_line(done, *expected: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args,expected", [
    (["--samples", "0"], "--samples"), (["--samples", "-5"], "--samples"), (["--batch-size", "0"], "--batch-size"),
    (["--temperature", "-1"], "--temperature"), (["--top-p", "0"], "top_p"), (["--dtype", "int3"], "dtype"),
    (["--judge", "nope"], "unknown judge 'nope'"), (["-M", "colour=red"], "no option 'colour'"),
    (["-M", "batch_size=lots"], "batch_size: give a whole number of rows (1 or more) or auto, not 'lots'"),
])
def test_bad_options_fail_before_any_model_loads(tmp_path, args, expected):
    store = tmp_path / "e.db"
    done = emprobe("run", "--model", "smollm2-135m", *args, "--store", str(store))
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # typer's usage line may precede its one error line
    assert not store.exists() or Store(store, read_only=True).runs() == []


def test_binary_files_are_named(tmp_path):
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    one_line(emprobe("run", "--suite", str(blob), "--store", str(tmp_path / "e.db")), str(blob), "UTF-8")
    one_line(emprobe("suites", "show", str(blob)), str(blob), "UTF-8")
    one_line(emprobe("judge", "validate", "--judge", "builtin", "--reference", str(blob), "--store",
                     str(tmp_path / "e.db")), str(blob), "UTF-8")


def test_a_damaged_store_is_named(tmp_path):
    path = make_store(tmp_path / "s.db", samples=40)
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page: 6 * page] = b"\xde\xad" * (3 * page // 2)  # keep the header, break pages in the middle
    path.write_bytes(bytes(data))
    for args in (["runs", "list"], ["runs", "show", "base"], ["report", "base", "-o", str(tmp_path / "r.html")]):
        line = one_line(emprobe(*args, "--store", str(path)))
        assert str(path) in line and "malformed" in line


def test_read_only_commands_read_a_store_on_a_read_only_disk(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from emprobe.cli import app

    path = make_store(tmp_path / "s.db")
    real = sqlite3.connect

    def read_only_disk(database, *args, **kwargs):  # what SQLite says when it cannot create the WAL's -shm file
        if isinstance(database, str) and "mode=ro" in database and "immutable=1" not in database:
            raise sqlite3.OperationalError("unable to open database file")
        return real(database, *args, **kwargs)

    monkeypatch.setattr("emprobe.store._sqlite.sqlite3.connect", read_only_disk)
    result = CliRunner().invoke(app, ["runs", "list", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert "base" in result.output


def test_a_full_disk_leaves_no_empty_run_and_names_the_cause(tmp_path):
    from emprobe.condition import resolve_conditions
    from emprobe.config import RunConfig
    from emprobe.runner import Runner
    from emprobe.suite import load_suite

    path = tmp_path / "full.db"
    store = Store(path)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 8}")  # SQLite's own 'disk full' once 8 pages are used
    config = RunConfig(model="openai-compat:m@http://127.0.0.1:9/v1", suites=(load_suite("core"),), samples=50,
                       conditions=tuple(resolve_conditions(["free"])), judges=())
    with pytest.raises(sqlite3.OperationalError, match="full"):
        Runner(config, store).plan()
    assert store.db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    assert store.db.execute("SELECT count(*) FROM samples").fetchone() == (0,)


def test_the_entry_point_turns_store_failures_into_one_line(monkeypatch, capsys, tmp_path):
    import emprobe.cli as cli

    Store(tmp_path / "x.db").close()

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'x.db'}: database or disk is full (nothing " \
        "stored before this was lost)"
