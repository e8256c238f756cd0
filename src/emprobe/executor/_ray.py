"""The Ray executor: shards of samples go to Ray actors, each holding a `Worker` (its models loaded once, its judges
built once); their results come back to the driver, which writes them (the store keeps a single writer). An actor
that dies (its process killed, its node lost) is replaced and its shards go to the others.

Imported only for `--executor ray`: the local path never imports Ray.
"""

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray
from ray.exceptions import ObjectLostError, RayActorError, RayTaskError, WorkerCrashedError

from emprobe.errors import EmprobeError
from emprobe.executor._executor import Verdicts
from emprobe.executor._records import ExecutorSettings, JudgeInfo, JudgeSetup, JudgeShard
from emprobe.executor._shards import generation_shards
from emprobe.executor._worker import Worker
from emprobe.model import GenerationRequest, GenerationResult, ModelRef

log = logging.getLogger("emprobe.ray")
T = TypeVar("T")
QUEUED_PER_WORKER = 2
"""Shards handed to each actor at a time. On a local model one runs and one waits, so that the actor never idles
between shards; on an HTTP client both run at once, so that no server idles while a shard waits for its slowest
request."""
READ_AHEAD_SHARDS = 8
"""Pending samples read ahead per actor, in shards, to sort prompts by length before cutting shards."""
REPLACEMENTS_PER_WORKER = 3
"""Dead actors replaced, per actor, before the run stops (something kills every worker)."""
WORKER_START_S = 600
"""How long a run with work left waits when none of its actors has started (the cluster has no room for one)."""
_LOST = (RayActorError, WorkerCrashedError, ObjectLostError)


class RayWorker(Worker):
    """A `Worker` inside a Ray actor."""

    def pid(self) -> int:
        """Its process id (to watch or stop one worker)."""
        return os.getpid()


_Actor = ray.remote(max_restarts=0)(RayWorker)


@ray.remote(max_retries=2)
def _resolve(ref: ModelRef) -> ModelRef:
    """`ref` resolved on a worker node: a task, so that runs planned ahead of their turn hold no actors."""
    return Worker().resolve(ref)


class RayExecutor:
    """Sends shards to `settings.workers` Ray actors (started on first use) and yields results as they arrive."""

    def __init__(self, settings: ExecutorSettings):
        self.settings = settings
        self.actors: list[Any] = []
        self._pids: list[Any] = []
        """Each actor's process id (asked first thing, so it is known while the actor is busy or after it died)."""
        self.in_flight = 0
        self.retried = 0
        """Shards sent again because their actor died."""
        self.replaced = 0
        self._started_ray = False

    # ---- the Executor interface ----------------------------------------------------------------------

    def resolve(self, ref: ModelRef) -> ModelRef:
        self._connect()
        task = _resolve.options(num_cpus=self.settings.cpus_per_worker, num_gpus=self.settings.gpus_per_worker)
        try:
            return ray.get(task.remote(ref))
        except RayTaskError as err:
            raise _cause(err) from None

    def model_info(self, ref: ModelRef) -> dict[str, str]:
        return {**self._ask("model_info", ref), "executor": f"ray ({len(self.actors)} workers)"}

    def generate(self, ref: ModelRef, pages: Iterable[list[GenerationRequest]]) -> Iterator[GenerationResult]:
        size = self.settings.shard_size
        shards = generation_shards(pages, size, READ_AHEAD_SHARDS * size * len(self._workers()))
        shared = ray.put(ref)
        for _, results in self._dispatch(shards, lambda actor, shard: actor.generate.remote(shared, shard)):
            yield from results

    def judge_info(self, setup: JudgeSetup) -> JudgeInfo:
        return self._ask("judge_info", setup)

    def judge(self, setup: JudgeSetup, shards: Iterable[JudgeShard]) -> Iterator[tuple[JudgeShard, Verdicts]]:
        shared = ray.put(setup)
        yield from self._dispatch(iter(shards), lambda actor, shard: actor.judge_shard.remote(shared, shard))

    def status(self) -> str:
        retried = f" · {self.retried} retried" if self.retried else ""
        return f"{len(self.actors)} Ray workers · {self.in_flight} shards in flight{retried}"

    def close(self) -> None:
        actors, self.actors, self._pids = self.actors, [], []
        for actor in actors:
            ray.kill(actor)
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    @property
    def max_shard(self) -> int:
        return self.settings.shard_size

    def worker_pids(self) -> list[int]:
        """The actors' process ids (an actor that died but was not found dead yet still has its own)."""
        self._workers()
        return ray.get(self._pids)

    # ---- actors ---------------------------------------------------------------------------------------

    def _workers(self) -> list[Any]:
        if not self.actors:
            self._connect()
            for _ in range(self._count()):
                self._start_actor()
        return self.actors

    def _connect(self) -> None:
        if ray.is_initialized():
            return
        where = self.settings.address or "a new local Ray"
        try:
            ray.init(address=self.settings.address, include_dashboard=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise EmprobeError(f"cannot start or reach Ray at {where}: {str(err).splitlines()[0]}") from None
        self._started_ray = True

    def _count(self) -> int:
        """`settings.workers`, or as many as the cluster's GPUs (with --gpus-per-worker) or CPUs hold."""
        s = self.settings
        have = ray.cluster_resources()
        gpus, cpus = have.get("GPU", 0.0), have.get("CPU", 0.0)
        fits = int(gpus // s.gpus_per_worker) if s.gpus_per_worker else int(cpus // s.cpus_per_worker)
        if s.gpus_per_worker:
            fits = min(fits, int(cpus // s.cpus_per_worker))
        if fits < (s.workers or 1):
            raise EmprobeError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: {s.workers or 1} workers of "
                               f"{s.cpus_per_worker:g} CPUs and {s.gpus_per_worker:g} GPUs do not fit")
        return s.workers or fits

    def _start_actor(self, slot: int | None = None) -> None:
        """A new actor, in `slot` (in place of a dead one) or added."""
        actor: Any = _Actor.options(num_cpus=self.settings.cpus_per_worker, num_gpus=self.settings.gpus_per_worker,
                                    max_concurrency=QUEUED_PER_WORKER).remote()
        if slot is None:
            self.actors.append(actor)
            self._pids.append(actor.pid.remote())
        else:
            self.actors[slot], self._pids[slot] = actor, actor.pid.remote()

    def _started(self) -> list[int]:
        """The slots whose actor has started. Only these get work, so a replacement the cluster has no room for
        (its node died with the actor it replaces) holds no shard while the other actors do them all."""
        done, _ = ray.wait(self._pids, num_returns=len(self._pids), timeout=0)
        finished = set(done)
        return [slot for slot, pid in enumerate(self._pids) if pid in finished]

    def _await_a_worker(self) -> None:
        """Wait for some actor to start (work is left and none has); stop with one line if none can."""
        ray.wait(self._pids, num_returns=1, timeout=WORKER_START_S)
        if not self._started():
            raise EmprobeError(f"no Ray worker could start in {WORKER_START_S} s: the cluster has no room for one "
                               "(a node lost, or its CPUs and GPUs busy); rerun the same command to resume")

    def _replace(self, slot: int, err: BaseException) -> None:
        self.replaced += 1
        if self.replaced > REPLACEMENTS_PER_WORKER * len(self.actors):
            raise EmprobeError(f"Ray workers keep dying ({self.replaced} replaced; last: "
                               f"{str(err).splitlines()[0]}); see the Ray logs; rerun the same command to resume")
        log.warning("Ray worker %d died (%s); starting another, its shards go to the others", slot,
                    str(err).splitlines()[0])
        ray.kill(self.actors[slot])
        self._start_actor(slot)

    def _ask(self, method: str, argument: Any) -> Any:
        """One worker's answer to a call that loads something (a model, a judge), made on every worker at once so
        that they all load together rather than each on its first shard; another worker answers if one dies."""
        for actor in self._workers():  # whichever started first answers below, the others' answers are not needed
            getattr(actor, method).remote(argument)  # (an error there recurs on their shards)
        call: Callable[[Any, Any], Any] = lambda actor, arg: getattr(actor, method).remote(arg)  # noqa: E731
        return next(self._dispatch(iter([argument]), call))[1]

    def _dispatch(self, items: Iterator[T], call: Callable[[Any, T], Any]) -> Iterator[tuple[T, Any]]:
        """Each item with `call(actor, item)`'s result, as they finish, keeping every started actor
        `QUEUED_PER_WORKER` deep; an item whose actor died goes to another actor (first in line), and the dead one is
        replaced."""
        actors = self._workers()
        again: deque[T] = deque()
        in_flight: dict[Any, tuple[T, int, Any]] = {}
        queued = [0] * len(actors)
        more = True
        try:
            while True:
                started = self._started()
                for slot in started:
                    while queued[slot] < QUEUED_PER_WORKER and (again or more):
                        if again:
                            item = again.popleft()
                        else:
                            try:
                                item = next(items)
                            except StopIteration:
                                more = False
                                break
                        in_flight[call(actors[slot], item)] = (item, slot, actors[slot])
                        queued[slot] += 1
                self.in_flight = len(in_flight)
                if not in_flight:
                    if not (again or more):
                        return
                    self._await_a_worker()
                    continue
                starting = [pid for slot, pid in enumerate(self._pids) if slot not in started]
                ready, _ = ray.wait([*in_flight, *starting], num_returns=1, timeout=1.0)
                for done in ready:
                    if done not in in_flight:
                        continue  # an actor has started: it gets work on the next pass
                    item, slot, actor = in_flight.pop(done)
                    queued[slot] -= 1
                    try:
                        result = ray.get(done)
                    except RayTaskError as err:
                        raise _cause(err) from None
                    except _LOST as err:
                        if getattr(err, "actor_init_failed", False):
                            raise EmprobeError(f"a Ray worker could not start: {_last_line(err)}; is this emprobe "
                                               "(the same version, with its extras) installed on every node?") from None
                        self.retried += 1
                        again.append(item)
                        if actors[slot] is actor:
                            self._replace(slot, err)
                        continue
                    yield item, result
        finally:
            self.in_flight = 0


def _cause(err: RayTaskError) -> BaseException:
    """What failed inside the worker: emprobe's own one-line errors as they are, anything else named."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, EmprobeError):
        return cause
    what = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
    return EmprobeError(f"a Ray worker failed: {what.splitlines()[0][:500]}")


def _last_line(err: BaseException) -> str:
    """The last line of an error's text: where a remote traceback names what went wrong."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(err).__name__
