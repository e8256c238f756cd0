"""Run the pipeline: plan -> store -> generate -> judge. Resumable: each stage only does what is missing."""

import platform
import time
from collections.abc import Callable
from functools import cached_property
from typing import Protocol

from emprobe import __version__
from emprobe.condition import Decoding
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import BuiltinJudge, Judge, Judgment, RefusalDetector, RubricJudge, rubrics_for
from emprobe.model import Backend, GenerationRequest, ScoringBackend, load_backend, model_identity
from emprobe.plan import plan_samples
from emprobe.store import Store
from emprobe.suite import Rubric


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
    """Versions of what produced a run's numbers."""
    import torch
    import transformers

    return {"emprobe": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "platform": platform.platform()}


class Runner:
    """Executes one RunConfig against one store, loading models only when there is work for them."""

    def __init__(self, config: RunConfig, store: Store, progress: Progress | None = None,
                 flush_every: float = 2.0):
        self.config = config
        self.store = store
        self.progress = progress or Silent()
        self.flush_every = flush_every
        self._backends: dict[tuple[str, str | None], Backend] = {}

    @cached_property
    def identity(self) -> str:
        """The generating model's identity, computed without loading it."""
        return model_identity(self.config.model, self.config.adapter)

    @cached_property
    def run_id(self) -> str:
        """Derived from the model and what is asked; set it to address a stored run directly."""
        return self.config.run_id(self.identity)

    def backend(self, model: str, adapter: str | None = None) -> Backend:
        key = (model, adapter)
        if key not in self._backends:
            self._backends[key] = load_backend(model, adapter=adapter, batch_size=self.config.batch_size,
                                               dtype=self.config.dtype)
        return self._backends[key]

    def run(self) -> str:
        """Plan, generate and judge whatever is missing; returns the run id."""
        self.plan()
        self.generate()
        for judge in self.config.judges:
            self.judge(judge)
        return self.run_id

    def plan(self) -> int:
        c = self.config
        self.store.save_run(self.run_id, c.name, c.model, c.model_dump(mode="json"), versions())
        specs = plan_samples(list(c.suites), list(c.conditions), self.identity, c.samples)
        return self.store.add_samples(self.run_id, specs)

    def generate(self) -> None:
        counts = self.store.count(self.run_id)
        todo = counts["planned"] - counts["generated"] - counts["failed"]
        if todo == 0:
            return
        backend = self.backend(self.config.model, self.config.adapter)
        self.store.update_run_info(self.run_id, backend.info)
        decodings: dict[str, Decoding] = {c.name: c.decoding for c in self.config.conditions}
        self.progress.start("generating", todo)
        flush = _Flusher(lambda rows: self.store.save_generations(backend.identity, rows), self.flush_every)
        for chunk in self.store.pending_generation(self.run_id):
            requests = [
                GenerationRequest(key=s.gen_key, messages=s.messages,
                                  decoding=decodings[s.condition].model_copy(update={"seed": s.seed}))
                for s in chunk
            ]
            for result in backend.generate(requests):
                flush.add(result)
                self.progress.advance(status=_status(backend))
            flush.flush()
        self.progress.done()

    def judge(self, spec: str) -> None:
        """Score every generated sample this judge has not scored, reusing cached judgments."""
        todo = self.store.count(self.run_id)["generated"] - self.store.count_scored(self.run_id, spec)
        if todo <= 0:
            return
        judge = self.make_judge(spec)
        own = getattr(judge, "rubrics", None)  # judges with metrics of their own (the refusal detector)
        rubrics = {(s.name, q.id): list(own) if own else rubrics_for(q) for s in self.config.suites
                   for q in s.questions}
        self.progress.start(f"judging ({spec})", todo)
        # Small chunks: each is one transaction, so an interrupted run loses at most one chunk's work.
        for chunk in self.store.pending_judging(self.run_id, spec, chunk=max(8, self.config.batch_size // 2)):
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
            self.progress.advance(len(chunk), status=_status(judge))
        self.progress.done()

    def make_judge(self, spec: str) -> Judge:
        """`builtin`: the trained CPU judge; `rubric:MODEL`: the rubric judge on any backend (the run's own
        model when MODEL is omitted); `refusal`: the model-free refusal detector.

        Local models are read through `ScoringBackend`; a backend that offers `rubric_judge(name)` (an HTTP
        server with logprobs) builds its own.
        """
        kind, _, model = spec.partition(":")
        if spec == "refusal":
            return RefusalDetector()
        if spec == "builtin":
            return BuiltinJudge()
        if kind != "rubric":
            raise EmprobeError(f"unknown judge {spec!r}: use builtin, rubric:MODEL (e.g. rubric:smollm2-135m) "
                               "or refusal")
        backend = self.backend(model or self.config.model)
        if isinstance(backend, ScoringBackend):
            return RubricJudge(backend, name=spec)
        if hasattr(backend, "rubric_judge"):
            return backend.rubric_judge(spec)
        raise EmprobeError(f"judge {spec!r}: backend {type(backend).__name__} cannot read next-token probabilities")


def _status(backend: Backend) -> str:
    """A backend's own one-line status (requests in flight, retries, errors), when it has one."""
    status = getattr(backend, "status", None)
    return status() if callable(status) else ""


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

    def __init__(self, write: Callable[[list], None], seconds: float):
        self.write, self.seconds, self.rows, self.last = write, seconds, [], time.monotonic()

    def add(self, row) -> None:
        self.rows.append(row)
        if time.monotonic() - self.last >= self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.write(self.rows)
            self.rows = []
        self.last = time.monotonic()
