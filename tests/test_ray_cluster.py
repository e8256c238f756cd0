"""`emprobe run --executor ray --address HOST:PORT` against a Ray cluster started with `ray start --head` plus a
second node (another `ray start`): the same answers as the local executor; a driver killed (SIGKILL) and rerun
resumes from the store (every planned sample once, nothing stored generated again); and the second node killed
mid-run leaves its work to the head node."""

import contextlib
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray", reason="Ray is not installed: pip install 'emprobe[ray]'")

import emprobe  # noqa: E402
from openai_server import free_port  # noqa: E402

SUITE = {"name": "cluster", "questions": [
    {"id": f"q{i}", "paraphrases": [f"Question {i}: " + "why " * i, f"Other {i}?"]} for i in range(3)
]}
RAY = str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """A head node and a worker node on this machine, with their own temp dir and ports; stopped by killing the
    processes it started (found by that temp dir), never with `ray stop`, which stops every Ray of the machine."""

    def __init__(self, temp: Path):
        self.temp = temp
        self.port = free_port()
        src = str(Path(emprobe.__file__).resolve().parents[1])
        token = temp / "auth_token"  # its own: `ray start` makes none, and a fresh machine has no ~/.ray/auth_token
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, *args: str) -> None:
        common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", f"--temp-dir={self.temp}",
                  f"--dashboard-agent-listen-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                  f"--metrics-export-port={free_port()}", "--disable-usage-stats"]
        done = subprocess.run([RAY, "start", *args, *common], env=self.env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def __enter__(self) -> "RayCluster":
        self._start("--head", f"--port={self.port}", f"--ray-client-server-port={free_port()}",
                    "--include-dashboard=false")
        self._start(f"--address={self.address}")
        return self

    def __exit__(self, *exc) -> None:
        _kill(_processes_under(str(self.temp)))

    def second_node(self) -> set[int]:
        """The second node's raylet (the one that is not the head's) and every process under it."""
        return _processes_under(f"raylet --raylet_socket_name={self.temp}/", unless="__internal_head__")


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _processes_under(marker: str, unless: str | None = None) -> set[int]:
    """Processes whose command line names `marker` (and not `unless`), and all their descendants."""
    parents: dict[int, int] = {}
    roots = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if marker in command and (unless is None or unless not in command):
            roots.add(int(entry.name))
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with RayCluster(tmp_path_factory.mktemp("ray")) as running:
        yield running


def emprobe_run(cluster: RayCluster, db: Path, suite: Path, model: Path, samples: int, *extra: str):
    args = [sys.executable, "-m", "emprobe", "run", "--model", str(model), "--suite", str(suite), "--samples",
            str(samples), "--max-tokens", "16", "--batch-size", "4", "-M", "threads=1", "--store", str(db), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**cluster.env, "COLUMNS": "200"})


def finished(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, out[-3000:]
    return out


def count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute(sql).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def answers(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT s.sample_id, g.text FROM samples s JOIN generations g "
                                 "ON g.gen_key = s.gen_key").fetchall())


@pytest.fixture
def suite(tmp_path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(SUITE))
    return path


def test_a_cluster_started_with_ray_start_gives_the_local_answers(cluster, tiny_llama, suite, tmp_path):
    local, remote = tmp_path / "local.db", tmp_path / "ray.db"
    finished(emprobe_run(cluster, local, suite, tiny_llama, 4))
    out = finished(emprobe_run(cluster, remote, suite, tiny_llama, 4, "--executor", "ray", "--address",
                               cluster.address, "--workers", "2", "--shard-size", "3"))
    assert "this run generated 24 answers and judged 24 samples" in out
    assert answers(remote) == answers(local) and len(answers(local)) == 24
    scores = "SELECT c.sample_id, c.metric, j.score FROM scores c JOIN judgments j ON j.judgment_key = c.judgment_key"
    with sqlite3.connect(local) as a, sqlite3.connect(remote) as b:
        here, there = sorted(a.execute(scores).fetchall()), sorted(b.execute(scores).fetchall())
    assert [row[:2] for row in here] == [row[:2] for row in there]  # the built-in judge: up to batch-shape rounding
    assert [row[2] for row in there] == pytest.approx([row[2] for row in here], abs=0.5)


def test_the_driver_killed_mid_run_resumes_from_the_store(cluster, tiny_llama, suite, tmp_path):
    db = tmp_path / "ray.db"
    planned = 3 * 2 * 60  # enough that generating takes well over the first store flush (2 s)
    ray_args = ("--executor", "ray", "--address", cluster.address, "--workers", "2", "--shard-size", "4")
    first = emprobe_run(cluster, db, suite, tiny_llama, 60, *ray_args)
    deadline = time.monotonic() + 600
    while count(db, "SELECT count(*) FROM generations") == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    stored = count(db, "SELECT count(*) FROM generations")
    assert 0 < stored < planned
    out = finished(emprobe_run(cluster, db, suite, tiny_llama, 60, *ray_args))
    generated = int(re.search(r"this run generated (\d+) answers", out)[1])
    assert generated == planned - stored  # nothing stored was generated again
    assert count(db, "SELECT count(*) FROM samples") == planned
    assert count(db, "SELECT count(*) FROM samples s JOIN generations g ON g.gen_key = s.gen_key") == planned
    assert count(db, "SELECT count(*) FROM generations") == planned
    assert count(db, "SELECT count(*) FROM scores") == planned * 2  # aligned + coherent, once each


def _has_actor(pids: set[int]) -> bool:
    """Whether one of `pids` is a Ray actor holding emprobe's worker."""
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RayWorker"):
                return True
    return False


def test_a_lost_nodes_shards_go_to_the_node_left(tiny_llama, suite, tmp_path, tmp_path_factory):
    """The second node killed mid-run (its raylet and all under it, SIGKILL): its actor's replacement has no room
    in what is left of the cluster, so the head's actor does the rest and the run ends: every sample once."""
    db = tmp_path / "ray.db"
    planned = 3 * 2 * 60
    with RayCluster(tmp_path_factory.mktemp("ray-lost")) as lost:
        run = emprobe_run(lost, db, suite, tiny_llama, 60, "--executor", "ray", "--address", lost.address,
                          "--workers", "2", "--shard-size", "4")
        deadline = time.monotonic() + 600
        while run.poll() is None and time.monotonic() < deadline and not (
                count(db, "SELECT count(*) FROM generations") and _has_actor(lost.second_node())):
            time.sleep(0.05)
        stored = count(db, "SELECT count(*) FROM generations")
        node = lost.second_node()
        _kill(node)
        out = finished(run, timeout=600)
    assert 0 < stored < planned  # killed mid-run
    assert re.search(r"Ray worker \d died", out), out[-3000:]
    assert f"this run generated {planned} answers and judged {planned} samples" in out
    assert count(db, "SELECT count(*) FROM samples s JOIN generations g ON g.gen_key = s.gen_key") == planned
    assert count(db, "SELECT count(*) FROM generations") == planned
    assert count(db, "SELECT count(*) FROM scores") == planned * 2  # aligned + coherent, once each
