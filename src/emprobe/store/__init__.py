"""The store: runs, samples, generations and judgments in one SQLite file; every query returns typed rows."""

from emprobe.store._records import (
    ActivationArray,
    AnsweredSample,
    Divergence,
    JudgeableSample,
    LabelCount,
    LeaseHolder,
    MetricScore,
    PairScore,
    PendingSample,
    RunRecord,
    SampleRow,
    SweepArm,
    SweepRecord,
    TrainingRun,
)
from emprobe.store._schema import SCHEMA_VERSION
from emprobe.store._sqlite import Store
from emprobe.store._worker import StoreWorker

__all__ = [
    "SCHEMA_VERSION",
    "ActivationArray",
    "AnsweredSample",
    "Divergence",
    "JudgeableSample",
    "LabelCount",
    "LeaseHolder",
    "MetricScore",
    "PairScore",
    "PendingSample",
    "RunRecord",
    "SampleRow",
    "Store",
    "StoreWorker",
    "SweepArm",
    "SweepRecord",
    "TrainingRun",
]
