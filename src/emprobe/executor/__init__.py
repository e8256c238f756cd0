"""Where samples are generated and judged: in this process (`LocalExecutor`, the default) or on Ray actors
(`--executor ray`). The runner plans, owns the store and writes what an executor yields."""

import importlib.util

from emprobe.errors import EmprobeError
from emprobe.executor._executor import Executor, Verdicts
from emprobe.executor._local import LocalExecutor
from emprobe.executor._records import ExecutorSettings, JudgeInfo, JudgeSetup, JudgeShard
from emprobe.executor._shards import generation_shards
from emprobe.executor._worker import Worker, judge_safely

__all__ = [
    "Executor",
    "ExecutorSettings",
    "JudgeInfo",
    "JudgeSetup",
    "JudgeShard",
    "LocalExecutor",
    "Verdicts",
    "Worker",
    "check_executor",
    "generation_shards",
    "judge_safely",
    "make_executor",
]


def check_executor(settings: ExecutorSettings) -> None:
    """One error line, before any work, when the executor cannot be used here."""
    if settings.kind == "ray" and importlib.util.find_spec("ray") is None:
        raise EmprobeError("--executor ray needs Ray: pip install 'emprobe[ray]'")


def make_executor(settings: ExecutorSettings) -> Executor:
    """The executor `settings` name; Ray is imported only here, and only for `ray`."""
    check_executor(settings)
    if settings.kind == "local":
        return LocalExecutor()
    from emprobe.executor._ray import RayExecutor

    return RayExecutor(settings)
