"""Run the pipeline: plan -> store -> generate -> judge. Resumable: each stage only does what is missing."""

import platform
import time
from collections.abc import Callable
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from emprobe import __version__
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import Judge, JudgeContext, Judgment, check_judge, load_judge, rubrics_for
from emprobe.model import Backend, BackendPool, GenerationRequest, GenerationResult, ModelRef, resolve, status_of
from emprobe.plan import plan_samples
from emprobe.store import Store
from emprobe.suite import Rubric

JUDGE_CHUNK = 32
"""Samples judged per transaction: an interrupted run loses at most one chunk's judgments."""


class Progress(Protocol):
    """Where the runner reports progress; the CLI shows bars, tests pass a silent one."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, n: int = 1, status: str = "") -> None: ...
    def done(self) -> None: ...


class Silent:
    def start(self, stage: str, total: int) -> None: ...
    def advance(self, n: int = 1, status: str = "") -> None: ...
    def done(self) -> None: ...


def versions() -> dict[str, str]:
    """Versions of what produced a run's numbers (read from package metadata: nothing heavy is imported)."""
    found = {"emprobe": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "peft", "httpx"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


class Runner:
    """Executes one RunConfig against one store, loading each model once and only when there is work for it.

    Use it as a context manager (or call `close`) so backends release their models, connections and threads.
    """

    def __init__(self, config: RunConfig, store: Store, progress: Progress | None = None,
                 flush_every: float = 2.0):
        self.config = config
        self.store = store
        self.progress = progress or Silent()
        self.flush_every = flush_every
        self.backends = BackendPool()
        for spec in config.judges:
            check_judge(spec)

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every backend this runner loaded."""
        self.backends.close()

    @cached_property
    def ref(self) -> ModelRef:
        """The run's model, resolved (identity, validated options) without loading it."""
        return resolve(self.config.model, self.config.adapter, self.config.backend_options)

    @cached_property
    def run_id(self) -> str:
        """Derived from the model and what is asked; set it to address a stored run directly."""
        return self.config.run_id(self.ref.identity)

    def judge_model(self, spec: str) -> Backend:
        """A judge's model: the run's own backend when the judge names the run's model (without its adapter)."""
        if spec == self.config.model:
            return self.backends.get(self.ref if not self.config.adapter else resolve(spec, options=self.ref.options))
        return self.backends.load(spec)

    def run(self, samples: int | None = None) -> str:
        """Plan, generate and judge whatever is missing; returns the run id."""
        self.plan(samples)
        self.generate()
        for judge in self.config.judges:
            self.judge(judge)
        return self.run_id

    def plan(self, samples: int | None = None) -> int:
        """Store the run and its planned samples (`samples` per paraphrase overrides the config's)."""
        c = self.config if samples is None else self.config.model_copy(update={"samples": samples})
        self.store.save_run(self.run_id, c.name, c.model, c.model_dump(mode="json"), versions())
        specs = plan_samples(list(c.suites), list(c.conditions), self.ref.identity, c.samples)
        return self.store.add_samples(self.run_id, specs)

    def generate(self) -> None:
        counts = self.store.count(self.run_id)
        todo = counts["planned"] - counts["generated"] - counts["failed"]
        if todo == 0:
            return
        backend = self.backends.get(self.ref)
        self.store.update_run_info(self.run_id, backend.info)
        self.progress.start("generating", todo)
        flush = _Flusher(lambda rows: self.store.save_generations(backend.identity, rows), self.flush_every)
        for chunk in self.store.pending_generation(self.run_id):
            requests = [GenerationRequest(key=s.gen_key, messages=s.messages, decoding=s.decoding) for s in chunk]
            for result in backend.generate(requests):
                flush.add(result)
                self.progress.advance(status=status_of(backend))
            flush.flush()
        self.progress.done()

    def judge(self, spec: str) -> None:
        """Score every generated sample this judge has not scored, reusing cached judgments."""
        todo = self.store.count(self.run_id)["generated"] - self.store.count_scored(self.run_id, spec)
        if todo <= 0:
            return
        judge = self.make_judge(spec)
        rubrics = {(s.name, q.id): rubrics_for(q, judge) for s in self.config.suites for q in s.questions}
        self.progress.start(f"judging ({spec})", todo)
        for chunk in self.store.pending_judging(self.run_id, spec, chunk=JUDGE_CHUNK):
            rows: list[tuple[str, str, Judgment | None]] = []
            work: dict[Rubric, list[tuple[str, str, str, str]]] = {}
            for sample in chunk:
                for rubric in rubrics[(sample.suite, sample.question_id)]:
                    key = stable_hash(judge.identity, rubric, sample.question, sample.answer)
                    work.setdefault(rubric, []).append((sample.sample_id, key, sample.question, sample.answer))
            cached = self.store.cached_judgments([k for items in work.values() for _, k, _, _ in items])
            for rubric, items in work.items():
                fresh = {k: (q, a) for _, k, q, a in items if k not in cached}
                verdicts = dict(zip(fresh, _judge_safely(judge, rubric, list(fresh.values())), strict=True))
                rows.extend((sample_id, key, verdicts.get(key)) for sample_id, key, _, _ in items)
            self.store.save_judgments(self.run_id, spec, judge.identity, rows)
            self.progress.advance(len(chunk), status=status_of(judge))
        self.progress.done()

    def make_judge(self, spec: str) -> Judge:
        """The judge `spec` names, with the run's thresholds; judge models are loaded through this runner."""
        context = JudgeContext(thresholds=self.config.thresholds, model=self.config.model, backend=self.judge_model)
        return load_judge(spec, context)


def _judge_safely(judge: Judge, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
    """Judge a batch; a judge that fails records the failure on each sample instead of stopping the run.

    An EmprobeError (a dead server, a server without logprobs) stops the run instead: nothing is recorded,
    so rerunning the same command judges those samples once the cause is fixed.
    """
    if not pairs:
        return []
    try:
        verdicts = judge.judge(rubric, pairs)
    except EmprobeError:
        raise
    except Exception as err:  # a judge's failure belongs to its samples, not to the run
        message = f"{type(err).__name__}: {err}".splitlines()[0][:500]
        return [Judgment(metric=rubric.name, error=message) for _ in pairs]
    if len(verdicts) != len(pairs):
        return [Judgment(metric=rubric.name, error=f"judge returned {len(verdicts)} judgments for {len(pairs)}")
                for _ in pairs]
    return verdicts


class _Flusher:
    """Buffers generations and writes them in one transaction every `seconds`."""

    def __init__(self, write: Callable[[list[GenerationResult]], None], seconds: float):
        self.write, self.seconds, self.last = write, seconds, time.monotonic()
        self.rows: list[GenerationResult] = []

    def add(self, row: GenerationResult) -> None:
        self.rows.append(row)
        if time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.write(self.rows)
            self.rows = []
        self.last = time.monotonic()
