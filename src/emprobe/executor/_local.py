"""The local executor: generation and judging in this process, one page of samples at a time."""

from collections.abc import Iterable, Iterator
from typing import Any

from emprobe.executor._executor import Verdicts
from emprobe.executor._records import JudgeInfo, JudgeSetup, JudgeShard
from emprobe.executor._worker import Worker
from emprobe.model import BackendPool, GenerationRequest, GenerationResult, ModelRef, status_of


class LocalExecutor:
    """Runs everything here with one `Worker`: each model loaded once, each judge built once."""

    def __init__(self) -> None:
        self.worker = Worker()
        self._busy: Any = None
        """The backend or judge at work, whose status the progress bar shows."""

    max_shard = 256
    """Judging shards are sized to take about `runner.JUDGE_SECONDS` here, up to this many samples."""

    @property
    def backends(self) -> BackendPool:
        """The models loaded so far."""
        return self.worker.backends

    def resolve(self, ref: ModelRef) -> ModelRef:
        return ref

    def model_info(self, ref: ModelRef) -> dict[str, str]:
        return self.worker.model_info(ref)

    def generate(self, ref: ModelRef, pages: Iterable[list[GenerationRequest]]) -> Iterator[GenerationResult]:
        backend = self._busy = self.worker.backend(ref)
        for page in pages:
            yield from backend.generate(page)

    def judge_info(self, setup: JudgeSetup) -> JudgeInfo:
        return self.worker.judge_info(setup)

    def judge(self, setup: JudgeSetup, shards: Iterable[JudgeShard]) -> Iterator[tuple[JudgeShard, Verdicts]]:
        self._busy = self.worker.judge(setup)
        for shard in shards:
            yield shard, self.worker.judge_shard(setup, shard)

    def status(self) -> str:
        return status_of(self._busy)

    def close(self) -> None:
        self.worker.close()
