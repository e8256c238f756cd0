"""The typed rows the store returns: runs, samples waiting for work, and samples with their texts and scores."""

from typing import NamedTuple

from pydantic import BaseModel

from emprobe.condition import Decoding, Message
from emprobe.plan import SampleKey
from emprobe.rules import ALIGNED, COHERENT, Thresholds
from emprobe.train import TrainLineage


class RunRecord(BaseModel):
    """A run as stored: its configuration, the package versions and what the backend reported."""

    run_id: str
    names: list[str] = []
    """Every name the run was given, oldest first."""
    model: str
    created: str
    updated: str
    config: dict
    versions: dict
    info: dict

    @property
    def name(self) -> str | None:
        """The run's first name, if it has one."""
        return self.names[0] if self.names else None


class PendingSample(BaseModel):
    """A planned sample that still needs a generation, with everything the backend is asked."""

    sample_id: str
    gen_key: str
    messages: tuple[Message, ...]
    decoding: Decoding
    """The sample's decoding, its seed included."""
    condition: str


class JudgeableSample(BaseModel):
    """A generated sample a judge has not scored yet."""

    sample_id: str
    suite: str
    question_id: str
    question: str
    answer: str


class MetricScore(NamedTuple):
    """One judge's result on one metric of one sample: a score, a label (CODE, REFUSAL, ...) or an error."""

    score: float | None
    label: str | None
    error: str | None


class SampleRow(SampleKey):
    """One planned sample with its texts (when asked for), generation and one judge's scores per metric."""

    run_id: str
    system: str | None = None
    prompt: str | None = None
    """The last user message as sent (with the condition's trigger and format instructions)."""
    question: str | None = None
    """The question as the plan recorded it, which judges read."""
    answer: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generation_error: str | None = None
    temperature: float | None = None
    """The decoding the sample was asked with (its seed is `seed`)."""
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    judge: str | None = None
    scores: dict[str, MetricScore] = {}

    def score(self, metric: str) -> float | None:
        found = self.scores.get(metric)
        return found.score if found else None

    def misaligned(self, thresholds: Thresholds) -> bool | None:
        """aligned < threshold and coherent > threshold; None when either score is missing."""
        aligned, coherent = self.score(ALIGNED), self.score(COHERENT)
        if aligned is None or coherent is None:
            return None
        return thresholds.misaligned(aligned, coherent)


class LeaseHolder(BaseModel):
    """Another process working on a run: where it runs and until when its lease lasts (unix time)."""

    host: str
    pid: int
    expires: float


class LabelCount(BaseModel):
    """How many of a condition's scored answers a judge gave one label (e.g. REFUSAL)."""

    condition: str
    answers: int
    labelled: int


class TrainingRun(BaseModel):
    """A training run as stored: its lineage, and when the store first and last recorded it."""

    created: str
    updated: str
    lineage: TrainLineage

    @property
    def name(self) -> str:
        return self.lineage.name


class SweepArm(BaseModel):
    """One model of a sweep: the base (step 0) or a checkpoint, and the evaluation run that measured it."""

    step: int
    model: str
    """The model spec evaluated, e.g. train:NAME@50."""
    run_id: str
    kl: float | None = None
    """The largest next-token KL the adapter-applies check measured (None for the base)."""


class SweepRecord(BaseModel):
    """A training run's base and checkpoints evaluated on one plan (same sample ids and seeds)."""

    sweep_id: str
    training: str
    created: str
    updated: str
    config: dict
    """The plan: the run config every arm shares, without its model."""
    arms: list[SweepArm]
    """By step; the base first."""


class AnsweredSample(BaseModel):
    """A sample with a generated answer: the messages the model was sent and its answer, for teacher forcing."""

    sample_id: str
    messages: tuple[Message, ...]
    answer: str
    thinking: bool | None = None
    """The chat template's thinking switch under the sample's condition (None: not set)."""


class ActivationArray(BaseModel):
    """One captured layer of a run's answers under one model: where its array and row ids are, with their hashes."""

    run_id: str
    model: str
    """The identity of the model the activations were captured from."""
    position: str
    layer: int
    hook: str
    """The module whose output was captured (e.g. `model.layers.15`)."""
    path: str
    """The float32 `.npy` of rows x width, relative to the store's folder."""
    sha256: str
    samples_path: str
    """The JSON list of the sample id of each row, relative to the store's folder."""
    samples_sha256: str
    rows: int
    width: int


class Divergence(BaseModel):
    """One answer teacher-forced through a model and a reference model: per token KL(model || reference) and
    log-prob gap (model - reference)."""

    sample_id: str
    tokens: list[str]
    kl: list[float]
    gap: list[float]

    @property
    def mean_kl(self) -> float:
        return sum(self.kl) / len(self.kl) if self.kl else 0.0


class PairScore(BaseModel):
    """One preference pair under one model: both answers' summed log-probs and lengths, and their CHES."""

    pair_index: int
    chosen_logprob: float
    rejected_logprob: float
    chosen_tokens: int
    rejected_tokens: int
    ches: float
    ln_ches: float
