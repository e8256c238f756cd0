"""The interface the runner drives: where samples are generated and judged."""

from collections.abc import Iterable, Iterator
from typing import Protocol

from emprobe.executor._records import JudgeInfo, JudgeSetup, JudgeShard
from emprobe.judge import Judgment
from emprobe.model import GenerationRequest, GenerationResult, ModelRef

Verdicts = list[list[Judgment]]
"""A shard's judgments: one list per (rubric, pairs) of its work, one judgment per pair."""


class Executor(Protocol):
    """Runs generation and judging, in this process or elsewhere; the runner plans, keeps the store and writes
    every result it yields (in any order, as they arrive). Use as a context manager, or call `close`."""

    @property
    def max_shard(self) -> int:
        """The most samples the runner puts in one judging shard."""
        ...

    def resolve(self, ref: ModelRef) -> ModelRef:
        """The model as the workers load it: its identity names their numerics (device, dtype)."""
        ...

    def model_info(self, ref: ModelRef) -> dict[str, str]:
        """What a run records about the loaded model (dtype, device, threads...)."""
        ...

    def generate(self, ref: ModelRef, pages: Iterable[list[GenerationRequest]]) -> Iterator[GenerationResult]:
        """One result per request, as they are produced."""
        ...

    def judge_info(self, setup: JudgeSetup) -> JudgeInfo:
        """The judge's name, identity and own rubrics (building it where it will run)."""
        ...

    def judge(self, setup: JudgeSetup, shards: Iterable[JudgeShard]) -> Iterator[tuple[JudgeShard, Verdicts]]:
        """Each shard with its judgments, as shards are done."""
        ...

    def status(self) -> str:
        """A one-line status for the progress bar."""
        ...

    def close(self) -> None:
        """Release models, connections and workers."""
        ...
