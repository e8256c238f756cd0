"""The store: runs, samples, generations and judgments in one SQLite file."""

from emprobe.store._sqlite import JudgeableSample, PendingSample, RunRecord, Store

__all__ = ["JudgeableSample", "PendingSample", "RunRecord", "Store"]
