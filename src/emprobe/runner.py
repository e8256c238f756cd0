"""Run the pipeline: plan -> store -> generate -> judge. Resumable: each stage only does what is missing."""

import platform
import time
from collections.abc import Iterator
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol

from emprobe import __version__
from emprobe.condition import split_reasoning
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.executor import Executor, JudgeInfo, JudgeSetup, JudgeShard, LocalExecutor, Verdicts
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment, check_judge, check_screen, rubrics_for
from emprobe.model import GenerationRequest, ModelRef, resolve
from emprobe.plan import next_turn, plan_samples, turn_of, turn_question_ids
from emprobe.rules import NO_REASONING, NOT_JUDGED, TURN
from emprobe.store import JudgeableSample, PendingSample, Store, StoreWorker
from emprobe.suite import Question, Rubric

JUDGE_SECONDS = 5.0
"""Judging goes in chunks sized to take about this long, each stored in one transaction: an interrupted run
loses at most one chunk's judgments. The built-in judge reads a call of 256 answers 1.2x faster than one of 64
(rows of like length share its forward passes), so chunks of a few seconds pay."""
LEASE_SECONDS = 30.0
"""A run's lease lasts this long unless renewed (every couple of seconds while its process works on it)."""


class Progress(Protocol):
    """Where the runner reports progress; the CLI shows bars, tests pass a silent one."""

    def start(self, stage: str, total: int) -> None: ...
    def advance(self, n: int = 1, status: str = "") -> None: ...
    def done(self) -> None: ...
    def note(self, message: str) -> None: ...


class Silent:
    def start(self, stage: str, total: int) -> None: ...
    def advance(self, n: int = 1, status: str = "") -> None: ...
    def done(self) -> None: ...
    def note(self, message: str) -> None: ...


def versions() -> dict[str, str]:
    """Versions of what produced a run's numbers (read from package metadata: nothing heavy is imported)."""
    found = {"emprobe": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "transformers", "peft", "numba", "httpx"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def check_judges(config: RunConfig) -> None:
    """One error line, before any work, for a judge that is unknown or cannot score one of the suites' rubrics
    (or for a rubric that reads the reasoning in a run that does not split it off)."""
    asked = [(f"question {q.id!r} of suite {s.name!r}", rubric) for s in config.suites for q in s.questions
             for rubric in rubrics_for(q)]
    for where, rubric in asked:
        if rubric.reads_reasoning and config.think is None:
            raise EmprobeError(f"{where}: rubric {rubric.name!r} scores the model's reasoning; run with --think")
    cascade = config.cascade
    for spec in (*config.judges, *((cascade.confirm,) if cascade else ())):
        check_judge(spec, asked)
    if cascade is not None:
        check_screen(cascade.screen)


def preflight(config: RunConfig) -> ModelRef:
    """Everything that can be checked before any work (the judges, the model and its options): the model."""
    check_judges(config)
    ref = resolve(config.model, config.adapter, config.backend_options)
    changed = [(c.name, c.intervention) for c in config.conditions if c.intervention is not None]
    if changed and ref.backend != "hf":
        name, intervention = changed[0]
        raise EmprobeError(f"condition {name!r} ({intervention.describe()}) needs a local model (the hf backend); "
                           f"{config.model!r} is served by {ref.backend}")
    return ref


class Runner:
    """Executes one RunConfig against one store, loading each model once and only when there is work for it.

    Generation and judging run on an `Executor` (this process by default, or Ray actors); the runner plans, keeps
    the run's lease and writes every result as it arrives. Use it as a context manager (or call `close`) so the
    executor releases its models, connections, threads and workers.
    """

    def __init__(self, config: RunConfig, store: Store, progress: Progress | None = None,
                 flush_every: float = 2.0, ref: ModelRef | None = None, executor: Executor | None = None):
        self.config = config
        self.store = store
        self.progress = progress or Silent()
        self.flush_every = flush_every
        self.executor: Executor = executor or LocalExecutor()
        self.worker: StoreWorker | None = None
        self.generated = 0
        """Answers this runner generated (and stored)."""
        self.judged = 0
        """Samples this runner judged (and stored)."""
        check_judges(config)
        self._resolved = ref
        """The model resolved already (`preflight`), or None."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Store what is pending, give up the run's lease and close the executor (what it loaded, its workers)."""
        try:
            self._end_session()
        finally:
            self.executor.close()

    def _session(self) -> StoreWorker:
        """The run's lease (waiting while another process holds it) and the thread that stores generations."""
        if self.worker is None:
            told = False
            while (holder := self.store.take_lease(self.run_id, LEASE_SECONDS)) is not None:
                if not told:
                    self.progress.note(f"run {self.run_id}: another emprobe (pid {holder.pid} on {holder.host}) is "
                                       "working on it; waiting for it to finish (Ctrl-C stops waiting)")
                    told = True
                time.sleep(1.0)
            if told:
                self.progress.note(f"run {self.run_id}: the other process is done; doing what is left")
            self.worker = StoreWorker(self.store.path, self.run_id, LEASE_SECONDS, self.flush_every)
        return self.worker

    def _end_session(self) -> None:
        if self.worker is not None:
            worker, self.worker = self.worker, None
            try:
                worker.close()
            finally:
                self.store.release_lease(self.run_id)

    @cached_property
    def ref(self) -> ModelRef:
        """The run's model, resolved (identity, validated options) without loading it, as the executor's workers
        will load it (their numerics)."""
        here = self._resolved or resolve(self.config.model, self.config.adapter, self.config.backend_options)
        return self.executor.resolve(here)

    @cached_property
    def run_id(self) -> str:
        """Derived from the model and what is asked; set it to address a stored run directly."""
        return self.config.run_id(self.ref.identity)

    def run(self, samples: int | None = None) -> str:
        """Plan, generate and judge whatever is missing; returns the run id."""
        self.plan(samples)
        try:
            self.generate()
            self.judge_all()
        finally:
            self._end_session()
        return self.run_id

    def plan(self, samples: int | None = None) -> int:
        """Store the run and its planned samples (`samples` per paraphrase overrides the config's)."""
        c = self.config if samples is None else self.config.model_copy(update={"samples": samples})
        specs = plan_samples(list(c.suites), list(c.conditions), self.ref.identity, c.samples)
        with self.store.transaction():  # all or nothing: a failure (a full disk) leaves no empty run behind
            self.store.save_run(self.run_id, c.name, c.model, c.model_dump(mode="json"), versions())
            return self.store.add_samples(self.run_id, specs)

    def generate(self) -> None:
        """Generate every planned sample without an answer, then each scripted conversation's next turn, until
        no turn is left; each answer is stored within `flush_every` seconds of arriving (by a background
        thread), and at once when this ends, normally or by an interrupt."""
        self._generate_pending()
        while self._plan_turns():
            self._generate_pending()

    def _plan_turns(self) -> int:
        """Plan the next turn of every scripted conversation whose last turn is answered; how many are new."""
        scripted = {(s.name, q.id): q for s in self.config.suites for q in s.questions if q.turns}
        if not scripted:
            return 0
        conditions = {c.name: c for c in self.config.conditions}
        ids = [i for q in scripted.values() for i in turn_question_ids(q)]
        specs = (next_turn(state, scripted[(state.suite, turn_of(state.question_id)[0])],
                           conditions[state.condition], self.ref.identity)
                 for state in self.store.turn_states(self.run_id, ids))
        return self.store.add_samples(self.run_id, (spec for spec in specs if spec is not None))

    def _generate_pending(self) -> None:
        if self._todo() == 0:
            return
        worker = self._session()
        todo = self._todo()  # another process may have done some while this one waited
        if todo == 0:
            return
        info = self.executor.model_info(self.ref)
        self.store.update_run_info(self.run_id, info)
        numerics = " ".join(info[k] for k in ("device", "dtype") if info.get(k))
        if numerics and info.get("batch_size"):
            numerics += f", batch {info['batch_size']}"
        self.progress.start(f"generating ({numerics})" if numerics else "generating", todo)
        conditions = {c.name: c for c in self.config.conditions}

        def request(s: PendingSample) -> GenerationRequest:
            c = conditions.get(s.condition)
            return GenerationRequest(key=s.gen_key, messages=s.messages, decoding=s.decoding,
                                     thinking=c.thinking if c else None, intervention=c.intervention if c else None)

        pages = ([request(s) for s in chunk] for chunk in self.store.pending_generation(self.run_id))
        try:
            for result in self.executor.generate(self.ref, pages):
                worker.save_generation(self.ref.identity, result)
                self.generated += 1
                self.progress.advance(status=self.executor.status())
        finally:
            worker.flush()
        self.progress.done()

    def _todo(self) -> int:
        counts = self.store.count(self.run_id)
        return counts["planned"] - counts["generated"] - counts["failed"]

    def judge_all(self) -> None:
        """Every configured judge on every answer, then the cascade's confirming judge on the answers it picks."""
        for spec in self.config.judges:
            self.judge(spec)
        self.confirm()

    def confirm(self) -> None:
        """The cascade's confirming judge on the answers its screen flags or finds uncertain, and its audit of the
        rest (see `Cascade`); answers it judged already are not judged again."""
        cascade = self.config.cascade
        if cascade is None:
            return
        screened = self.store.misaligned_probabilities(self.run_id, cascade.screen)
        self.judge(cascade.confirm, {s for s, p in screened.items() if cascade.confirms(s, p)})

    def judge(self, spec: str, only: set[str] | None = None) -> None:
        """Score every generated sample (of `only`, when given) this judge has not scored, reusing cached
        judgments."""
        if self._unjudged(spec, only) <= 0:
            return
        self._session()
        todo = self._unjudged(spec, only)
        if todo <= 0:
            return
        setup = JudgeSetup(spec=spec, thresholds=self.config.thresholds, model=self.config.model,
                           options=self.config.backend_options)
        judge = self.executor.judge_info(setup)
        rubrics = {(s.name, q.id): rubrics_for(q, judge) for s in self.config.suites for q in s.questions}
        questions = {(s.name, q.id): q for s in self.config.suites for q in s.questions}
        self.progress.start(f"judging ({spec})", todo)
        rows: dict[int, _ShardRows] = {}
        shards = self._judge_shards(spec, judge, rubrics, questions, rows, only)
        for shard, verdicts in self.executor.judge(setup, shards):
            self.store.save_judgments(self.run_id, spec, judge.identity, rows.pop(shard.index).with_verdicts(verdicts))
            self.judged += shard.samples
            self.progress.advance(shard.samples, status=self.executor.status())
        self.progress.done()

    def _unjudged(self, spec: str, only: set[str] | None = None) -> int:
        if only is not None:
            return len(only - self.store.misaligned_probabilities(self.run_id, spec).keys())
        return self.store.count(self.run_id)["generated"] - self.store.count_scored(self.run_id, spec)

    def _judge_shards(self, spec: str, judge: JudgeInfo, rubrics: dict[tuple[str, str], list[Rubric]],
                      questions: dict[tuple[str, str], Question], rows: "dict[int, _ShardRows]",
                      only: set[str] | None = None) -> Iterator[JudgeShard]:
        """The unjudged samples in shards, each with the pairs its rubrics still need (cached judgments are
        reused); `rows` gets each shard's rows to store. Shards are sized so that judging one here takes about
        JUDGE_SECONDS (the time until the next is asked for), so an interrupt loses at most one. With `only`, just
        those samples."""
        size, index = 8, 0
        for page in self.store.pending_judging(self.run_id, spec):
            page = [s for s in page if only is None or s.sample_id in only]
            while page:
                chunk, page = page[:size], page[size:]
                began = time.monotonic()
                shard, rows[index] = self._judge_shard(index, judge, rubrics, questions, chunk)
                index += 1
                yield shard
                pace = JUDGE_SECONDS * len(chunk) / max(time.monotonic() - began, 1e-3)
                size = max(1, min(self.executor.max_shard, int(pace)))

    def _judge_shard(self, index: int, judge: JudgeInfo, rubrics: dict[tuple[str, str], list[Rubric]],
                     questions: dict[tuple[str, str], Question], chunk: list[JudgeableSample]
                     ) -> "tuple[JudgeShard, _ShardRows]":
        """Some samples' work on their rubrics, without what is cached, and the rows that will store it (a turn its
        question does not judge gets a NOT_JUDGED mark instead)."""
        work: dict[Rubric, list[tuple[str, str, str, str]]] = {}
        preset: dict[tuple[str, str], Judgment] = {}
        for sample in chunk:
            base, turn = turn_of(sample.question_id)
            if not questions[(sample.suite, base)].judged(turn):
                key = stable_hash(judge.identity, NOT_JUDGED, sample.question, sample.answer)
                preset[(sample.sample_id, key)] = Judgment(metric=TURN, label=NOT_JUDGED)
                continue
            reasoning, answer = (split_reasoning(sample.answer, self.config.think) if self.config.think
                                 else (None, sample.answer))
            for rubric in rubrics[(sample.suite, base)]:
                text = reasoning if rubric.reads_reasoning else answer
                key = stable_hash(judge.identity, rubric, sample.question, text)
                if text is None:  # a reasoning rubric on an answer without reasoning: nothing to score
                    preset[(sample.sample_id, key)] = Judgment(metric=rubric.name, label=NO_REASONING)
                    continue
                work.setdefault(rubric, []).append((sample.sample_id, key, sample.question, text))
        cached = self.store.cached_judgments([k for items in work.values() for _, k, _, _ in items])
        fresh = {rubric: {k: (q, a) for _, k, q, a in items if k not in cached} for rubric, items in work.items()}
        todo = [(rubric, pairs) for rubric, pairs in fresh.items() if pairs]
        shard = JudgeShard(index=index, samples=len(chunk),
                           work=tuple((rubric.as_answer_rubric(), tuple(pairs.values())) for rubric, pairs in todo))
        keyed = [(sample_id, key) for items in work.values() for sample_id, key, _, _ in items]
        return shard, _ShardRows(keyed + list(preset), [list(pairs) for _, pairs in todo], preset)


class _ShardRows:
    """The (sample, judgment key) rows of one shard, the keys its work judges, and the rows decided without a
    judge (a reasoning rubric where there is no reasoning, a turn not judged); the rest are cached."""

    def __init__(self, keyed: list[tuple[str, str]], fresh_keys: list[list[str]],
                 preset: dict[tuple[str, str], Judgment]):
        self.keyed, self.fresh_keys, self.preset = keyed, fresh_keys, preset

    def with_verdicts(self, verdicts: Verdicts) -> list[tuple[str, str, Judgment | None]]:
        """Rows to store: a fresh judgment by its key, None (the cached one) for the rest."""
        found = {key: verdict for keys, judged in zip(self.fresh_keys, verdicts, strict=True)
                 for key, verdict in zip(keys, judged, strict=True)}
        return [(sample_id, key, self.preset.get((sample_id, key)) or found.get(key)) for sample_id, key in self.keyed]
