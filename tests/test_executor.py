"""What every executor shares: shards keep a prompt's samples together and prompts of similar length side by side;
the local path never imports Ray; executor options are checked, one line each, before any work; a run's model is
named as the executor's workers load it."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from emprobe.condition import Condition, Decoding, Message
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.executor import ExecutorSettings, LocalExecutor, Worker, generation_shards
from emprobe.model import BackendEntry, GenerationRequest, GenerationResult, ModelRef, register_backend, resolve
from emprobe.runner import Runner, preflight
from emprobe.store import Store
from emprobe.suite import parse_suite


def requests(prompt: str, n: int, first: int = 0) -> list[GenerationRequest]:
    messages = (Message(role="user", content=prompt),)
    return [GenerationRequest(key=f"{prompt}-{i}", messages=messages, decoding=Decoding(seed=i))
            for i in range(first, first + n)]


def test_shards_keep_prompts_whole_and_sort_them_by_length():
    pages = [requests("a" * 50, 3) + requests("b", 2), requests("b", 1, first=2) + requests("c" * 10, 4),
             requests("d" * 30, 9)]
    shards = list(generation_shards(pages, size=6, window=6))
    keys = [[r.key.split("-")[0][0] for r in shard] for shard in shards]
    assert sum(len(s) for s in shards) == 19 and len({r.key for s in shards for r in s}) == 19
    assert all(len(s) <= 6 for s in shards)
    # the first window (a, b) waits for b's last sample in the next page; short prompts first within a window
    assert keys[0] == ["b", "b", "b", "a", "a", "a"]
    assert keys[1] == ["c"] * 4
    assert keys[2:] == [["d"] * 6, ["d"] * 3]  # a prompt larger than a shard is the only one split


def test_local_runs_never_import_ray(tmp_path):
    code = ("import sys, emprobe.cli, emprobe.runner, emprobe.executor; from emprobe.executor import make_executor, "
            "ExecutorSettings; make_executor(ExecutorSettings()).close(); print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


@pytest.mark.parametrize(("given", "words"), [
    ({"kind": "spark"}, "Input should be 'local' or 'ray'"),
    ({"address": "auto"}, "--address needs --executor ray"),
    ({"workers": 4}, "--workers needs --executor ray"),
    ({"kind": "ray", "workers": 0}, "greater than or equal to 1"),
])
def test_executor_options_are_checked_before_any_work(given, words, tmp_path):
    from emprobe.cli._evaluate import executor_settings

    with pytest.raises(EmprobeError, match=words):
        executor_settings(**{**ExecutorSettings().model_dump(), **given})


class _Elsewhere(LocalExecutor):
    """An executor whose workers load the model with other numerics than this process would."""

    def resolve(self, ref: ModelRef) -> ModelRef:
        return ref.model_copy(update={"identity": ref.identity + "|elsewhere"})


def test_a_preflighted_model_is_named_as_the_executors_workers_load_it(tmp_path):
    suite = parse_suite({"name": "s", "questions": [{"id": "q", "paraphrases": ["Hi?"]}]}, "s", "mem")
    config = RunConfig(model="openai-compat:m@http://127.0.0.1:9/v1", suites=(suite,),
                       conditions=(Condition(name="free", decoding=Decoding()),), judges=())
    runner = Runner(config, Store(tmp_path / "s.db"), ref=preflight(config), executor=_Elsewhere())
    assert runner.ref.identity.endswith("|elsewhere")
    assert runner.run_id == config.run_id(runner.ref.identity)


class _Overlapping:
    """A backend that counts the `generate` calls running at once; `overlap:concurrent` says calls may overlap."""

    loads = 0

    def __init__(self, ref: ModelRef):
        self.identity, self.info = ref.identity, {}
        self.concurrent = ref.name == "concurrent"
        self.active = self.peak = 0
        self._count = threading.Lock()
        time.sleep(0.1)  # loading takes a while: both threads ask for it meanwhile
        _Overlapping.loads += 1

    def generate(self, requests):
        with self._count:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.3)
        with self._count:
            self.active -= 1
        for r in requests:
            yield GenerationResult(key=r.key, text="ok", finish_reason="stop")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("name, overlap", [("concurrent", 2), ("local", 1)])
def test_a_worker_runs_two_shards_at_once_only_on_a_backend_that_allows_it(name, overlap):
    """What a Ray actor does with its two queued shards: an HTTP client's run together, a local model's one after
    the other; the model is loaded once although both threads ask for it at once."""
    register_backend("overlap", BackendEntry(load=_Overlapping, identity=lambda model, adapter: (model, None)))
    worker, ref = Worker(), resolve(f"overlap:{name}")
    _Overlapping.loads = 0
    with ThreadPoolExecutor(2) as pool:
        shards = list(pool.map(lambda prompt: worker.generate(ref, requests(prompt, 3)), ["a", "b"]))
    assert [[r.key for r in shard] for shard in shards] == [[f"{p}-{i}" for i in range(3)] for p in "ab"]
    backend = worker.backend(ref)
    assert isinstance(backend, _Overlapping) and backend.peak == overlap
    assert _Overlapping.loads == 1 and len(worker.backends) == 1
    worker.close()
