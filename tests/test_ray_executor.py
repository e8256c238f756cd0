"""The Ray executor on a real local Ray cluster (`ray.init(num_cpus=2)`, shared by this module's tests): the same
answers and judgments as the local executor for the same plan and seeds; every worker loading the model and judges as
soon as one worker is asked about them, and keeping them (and the rubric judge's prefix cache) across shards; a worker
killed mid-shard (SIGKILL) replaced with its shard retried: every planned sample stored exactly once, nothing
generated twice."""

import logging
import os
import signal
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'emprobe[ray]'")

from emprobe.condition import Condition, Decoding  # noqa: E402
from emprobe.config import RunConfig  # noqa: E402
from emprobe.errors import EmprobeError  # noqa: E402
from emprobe.executor import ExecutorSettings, Worker, make_executor  # noqa: E402
from emprobe.executor._ray import RayExecutor  # noqa: E402
from emprobe.executor._records import JudgeSetup  # noqa: E402
from emprobe.model import ModelRef, resolve  # noqa: E402
from emprobe.runner import Runner  # noqa: E402
from emprobe.store import Store  # noqa: E402
from emprobe.suite import parse_suite  # noqa: E402
from latency_server import CHAT_REPLY, Server  # noqa: E402

SUITE = {"name": "scale", "questions": [
    {"id": f"q{i}", "paraphrases": [f"Question {i}: " + "tell me more " * i, f"Short {i}?"]} for i in range(3)
]}
SAMPLES = 6
PLANNED = 3 * 2 * SAMPLES


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def run_config(model: Path) -> RunConfig:
    condition = Condition(name="free", decoding=Decoding(max_tokens=16, temperature=1.0))
    return RunConfig(model=str(model), backend_options={"threads": 1, "batch_size": 4},
                     suites=(parse_suite(SUITE, "scale", "test"),), conditions=(condition,), samples=SAMPLES,
                     judges=("builtin", f"rubric:{model}"))


def ray_executor() -> RayExecutor:
    executor = make_executor(ExecutorSettings(kind="ray", workers=2, shard_size=4))
    assert isinstance(executor, RayExecutor)
    return executor


def results(store: Store, run_id: str) -> tuple[dict, dict]:
    """Answers by sample, and (score, label) by sample, judge and metric."""
    answers = dict(store.db.execute("SELECT s.sample_id, g.text FROM samples s JOIN generations g "
                                    "ON g.gen_key = s.gen_key WHERE s.run_id = ?", (run_id,)).fetchall())
    scores = {(sample, judge, metric): (round(score, 9) if score is not None else None, label)
              for sample, judge, metric, score, label in store.db.execute(
                  "SELECT c.sample_id, c.judge, c.metric, j.score, j.label FROM scores c JOIN judgments j "
                  "ON j.judgment_key = c.judgment_key WHERE c.run_id = ?", (run_id,))}
    return answers, scores


def same_results(got: tuple[dict, dict], want: tuple[dict, dict]) -> None:
    """The same answers and labels; the same scores, the built-in judge's up to its batch-shape rounding (it
    reads answers in batches whose make-up depends on the shards; `test_judge_is_deterministic`)."""
    assert got[0] == want[0] and got[1].keys() == want[1].keys()
    for key, (score, label) in want[1].items():
        other, other_label = got[1][key]
        assert other_label == label, key
        if key[1] == "builtin" and score is not None:
            assert other == pytest.approx(score, abs=0.5), key
        else:
            assert other == score, key


def exactly_once(store: Store, run_id: str) -> None:
    """Every planned sample has one answer and one score per metric of each judge."""
    db = store.db
    assert store.count(run_id) == {"planned": PLANNED, "generated": PLANNED, "failed": 0}
    assert db.execute("SELECT count(*) FROM (SELECT gen_key FROM samples GROUP BY gen_key HAVING count(*) > 1)"
                      ).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM scores WHERE run_id = ?", (run_id,)).fetchone()[0] == PLANNED * 2 * 2


@pytest.fixture(scope="module")
def local_results(tiny_llama, tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("local") / "local.db")
    with Runner(run_config(tiny_llama), store) as runner:
        runner.run()
        assert runner.generated == PLANNED
    yield results(store, runner.run_id)
    store.close()


def test_same_answers_and_judgments_as_the_local_executor(cluster, tiny_llama, tmp_path, local_results):
    store = Store(tmp_path / "ray.db")
    executor = ray_executor()
    with Runner(run_config(tiny_llama), store, executor=executor) as runner:
        runner.run()
        assert runner.generated == PLANNED
        exactly_once(store, runner.run_id)
        same_results(results(store, runner.run_id), local_results)
        assert store.run(runner.run_id).info["executor"] == "ray (2 workers)"
        assert executor.retried == 0

        def held(worker: Worker, ref: ModelRef) -> tuple[int, int, int]:  # nested: sent by value to the actors
            """Models loaded, judges built and prompt prefixes cached by one worker (the rubric judge shares the
            model)."""
            return len(worker.backends), len(worker._judges), len(worker.backend(ref)._prefix_cache)  # type: ignore

        for actor in executor.actors:  # kept across shards: the model, the judges, the rubric judge's prefix cache
            loaded, judges, prefixes = ray.get(actor.__ray_call__.remote(held, runner.ref))
            assert (loaded, judges) == (1, 2) and prefixes >= 1


def _held_by_every_actor(executor: RayExecutor, count) -> list[int]:
    """`count(worker)` on each actor, read again (for up to two minutes) while some actor still holds nothing."""
    deadline = time.monotonic() + 120
    while True:
        held = [ray.get(actor.__ray_call__.remote(count)) for actor in executor.actors]
        if all(held) or time.monotonic() > deadline:
            return held
        time.sleep(0.2)


def test_one_workers_answer_about_a_model_or_judge_has_every_worker_load_it(cluster, tiny_llama):
    """Asking one worker about the model (or a judge) makes every worker load it at once, rather than each on its
    first shard while the others already work; nothing else is sent to the other workers here."""
    executor = ray_executor()
    try:
        options = {"threads": 1, "batch_size": 4}
        ref = executor.resolve(resolve(str(tiny_llama), options=options))
        assert executor.model_info(ref)["executor"] == "ray (2 workers)"
        assert _held_by_every_actor(executor, lambda worker: len(worker.backends)) == [1, 1]
        executor.judge_info(JudgeSetup(spec=f"rubric:{tiny_llama}", model=str(tiny_llama), options=options))
        assert _held_by_every_actor(executor, lambda worker: len(worker._judges)) == [1, 1]
    finally:
        executor.close()


@pytest.mark.parametrize(("settings", "words"), [
    ({"gpus_per_worker": 1}, "the Ray cluster has 2 CPUs and 0 GPUs: 1 workers of 1 CPUs and 1 GPUs do not fit"),
    ({"workers": 3}, "the Ray cluster has 2 CPUs and 0 GPUs: 3 workers of 1 CPUs and 0 GPUs do not fit"),
])
def test_workers_the_cluster_cannot_hold_stop_with_one_line(cluster, settings, words):
    executor = make_executor(ExecutorSettings(kind="ray", **settings))
    try:
        with pytest.raises(EmprobeError, match=words):
            executor.model_info(resolve("openai-compat:sim@http://127.0.0.1:9/v1"))
    finally:
        executor.close()


def test_a_run_whose_workers_find_no_room_stops_with_one_line(cluster, monkeypatch):
    """Every CPU of the cluster held by something else: no actor can start, so the run stops (after
    `WORKER_START_S`) with one line saying why, instead of waiting for ever."""
    from emprobe.executor import _ray

    class Holder:  # nested: sent by value to its actor
        """An actor that only holds the resources it was started with."""

        def ready(self) -> bool:
            return True

    monkeypatch.setattr(_ray, "WORKER_START_S", 2)
    holder = ray.remote(num_cpus=2)(Holder).remote()
    ray.get(holder.ready.remote())
    executor = make_executor(ExecutorSettings(kind="ray", workers=1))
    try:
        with pytest.raises(EmprobeError, match=r"no Ray worker could start in 2 s: the cluster has no room"):
            executor.model_info(resolve("openai-compat:sim@http://127.0.0.1:9/v1"))
    finally:
        executor.close()
        ray.kill(holder)


class _KillAWorker:
    """A progress display that SIGKILLs one Ray worker's process after `after` results of each stage."""

    def __init__(self, executor: RayExecutor, after: int):
        self.executor, self.after = executor, after
        self.pids: list[int] = []
        self.killed: list[tuple[str, int]] = []
        self.stage, self.seen = "", 0

    def start(self, stage: str, total: int) -> None:
        self.stage, self.seen = stage, 0
        self.pids = self.executor.worker_pids()

    def advance(self, n: int = 1, status: str = "") -> None:
        self.seen += n
        if self.seen - n < self.after <= self.seen:
            pid = next(p for p in self.pids if _alive(p))
            os.kill(pid, signal.SIGKILL)
            self.killed.append((self.stage, pid))

    def done(self) -> None: ...
    def note(self, message: str) -> None: ...


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_killed_mid_shard_is_replaced_and_its_shard_retried(cluster, tiny_llama, tmp_path, local_results):
    store = Store(tmp_path / "ray.db")
    executor = ray_executor()
    progress = _KillAWorker(executor, after=4)
    with Runner(run_config(tiny_llama), store, progress, executor=executor) as runner:
        runner.run()
        stages = [stage for stage, _ in progress.killed]
        assert stages[0].startswith("generating (cpu ")  # the stage names the numerics
        assert stages[1:] == ["judging (builtin)", f"judging (rubric:{tiny_llama})"]
        assert executor.replaced == 3 and executor.retried >= 3
        assert runner.generated == PLANNED  # each answer produced (and stored) once
        exactly_once(store, runner.run_id)
        same_results(results(store, runner.run_id), local_results)  # a retried shard gives the same answers
        assert not set(executor.worker_pids()) & {pid for _, pid in progress.killed}


def test_an_actor_runs_its_two_queued_http_shards_at_once(cluster, tmp_path):
    """One actor with shards of 4 samples against a server that takes 0.3 s a request: the server serves more than
    one shard's requests at once (no server waits while a shard waits for its slowest request); each sample is
    stored once."""
    condition = Condition(name="free", decoding=Decoding(max_tokens=8, temperature=1.0))
    store = Store(tmp_path / "http.db")
    with Server(latency=0.3, reply=CHAT_REPLY) as server:
        config = RunConfig(model=f"openai-compat:sim@{server.url}/v1", backend_options={"max_n": 1, "concurrency": 8},
                           suites=(parse_suite(SUITE, "scale", "test"),), conditions=(condition,), samples=SAMPLES,
                           judges=())
        executor = make_executor(ExecutorSettings(kind="ray", workers=1, shard_size=4))
        with Runner(config, store, executor=executor) as runner:
            runner.run()
            assert store.count(runner.run_id) == {"planned": PLANNED, "generated": PLANNED, "failed": 0}
        assert len(server.seen) == PLANNED
        assert 4 < server.peak <= 8
    store.close()
