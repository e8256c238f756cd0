"""The records executors exchange with the runner: how to build a judge anywhere, what the runner needs of it,
shards of judging work, and where work runs (`ExecutorSettings`)."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emprobe.rules import Thresholds
from emprobe.suite import Rubric


class JudgeSetup(BaseModel):
    """How to build a judge in any process: its spec, the run's thresholds, and the run's model with its backend
    options (what a judge on the run's own model loads)."""

    model_config = ConfigDict(frozen=True)

    spec: str
    thresholds: Thresholds = Thresholds()
    model: str | None = None
    options: dict[str, Any] = {}


class JudgeInfo(BaseModel):
    """What the runner needs of a judge built elsewhere: its name, identity, and own rubrics (None: it scores the
    questions' rubrics)."""

    model_config = ConfigDict(frozen=True)

    name: str
    identity: str
    rubrics: tuple[Rubric, ...] | None = None


class JudgeShard(BaseModel):
    """Samples judged and stored together: the (question, answer) pairs each rubric still needs (cached judgments
    are left out), for `samples` samples."""

    model_config = ConfigDict(frozen=True)

    index: int
    samples: int
    work: tuple[tuple[Rubric, tuple[tuple[str, str], ...]], ...]


class ExecutorSettings(BaseModel):
    """Where generation and judging run: in this process (`local`) or on Ray actors (`ray`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    """A running Ray cluster: `auto`, `HOST:PORT` or `ray://HOST:PORT`; None starts a Ray on this machine."""
    workers: int | None = Field(default=None, ge=1)
    """Actors; None: as many as the cluster's GPUs (or CPUs) allow."""
    gpus_per_worker: float = Field(default=0.0, ge=0.0)
    cpus_per_worker: float = Field(default=1.0, gt=0.0)
    shard_size: int = Field(default=256, ge=1)
    """Samples sent to an actor at a time (all samples of one prompt stay together up to this many)."""

    @model_validator(mode="after")
    def _ray_settings_need_ray(self) -> "ExecutorSettings":
        ray_only = {"address": self.address is not None, "workers": self.workers is not None,
                    "gpus_per_worker": self.gpus_per_worker != 0.0, "cpus_per_worker": self.cpus_per_worker != 1.0,
                    "shard_size": self.shard_size != 256}
        given = [name for name, set_ in ray_only.items() if set_]
        if self.kind == "local" and given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --executor ray")
        return self
