"""What one process generates and judges with: the local executor has one `Worker`, each Ray actor holds one."""

import threading
from contextlib import nullcontext

from emprobe.errors import EmprobeError
from emprobe.executor._executor import Verdicts
from emprobe.executor._records import JudgeInfo, JudgeSetup, JudgeShard
from emprobe.hashing import stable_hash
from emprobe.judge import Judge, JudgeContext, Judgment, load_judge
from emprobe.model import Backend, BackendPool, GenerationRequest, GenerationResult, ModelRef, resolve
from emprobe.suite import Rubric


class Worker:
    """Backends loaded once each, and judges built once each; a judge on the run's own model shares its backend.

    Safe to call from several threads (a Ray actor runs its queued shards at once): models load once, and shards
    run one at a time except generation on a backend whose calls overlap safely (`concurrent`: HTTP clients).
    """

    def __init__(self) -> None:
        self.backends = BackendPool()
        self._judges: dict[str, Judge] = {}
        self._loading = threading.RLock()
        self._serial = threading.Lock()
        """Held while a shard computes on something that must not run twice at once (a local model, a judge)."""

    def resolve(self, ref: ModelRef) -> ModelRef:
        """`ref` resolved here, where the model will be loaded (its numerics are this machine's)."""
        return resolve(ref.spec, ref.adapter, ref.options)

    def backend(self, ref: ModelRef) -> Backend:
        with self._loading:
            return self.backends.get(ref)

    def model_info(self, ref: ModelRef) -> dict[str, str]:
        return dict(self.backend(ref).info)

    def generate(self, ref: ModelRef, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One shard's results."""
        backend = self.backend(ref)
        with nullcontext() if getattr(backend, "concurrent", False) is True else self._serial:
            return list(backend.generate(requests))

    def judge(self, setup: JudgeSetup) -> Judge:
        """The judge `setup` describes, built on first use."""
        key = stable_hash(setup)
        with self._loading:
            if key not in self._judges:
                def load_model(spec: str) -> Backend:
                    own = spec == setup.model  # the run's own model, with its options (without its adapter)
                    return self.backend(resolve(spec, options=setup.options if own else None))

                context = JudgeContext(thresholds=setup.thresholds, model=setup.model, backend=load_model)
                self._judges[key] = load_judge(setup.spec, context)
            return self._judges[key]

    def judge_info(self, setup: JudgeSetup) -> JudgeInfo:
        judge = self.judge(setup)
        own = getattr(judge, "rubrics", None)
        return JudgeInfo(name=judge.name, identity=judge.identity, rubrics=tuple(own) if own else None)

    def judge_shard(self, setup: JudgeSetup, shard: JudgeShard) -> Verdicts:
        judge = self.judge(setup)
        with self._serial:
            return [judge_safely(judge, rubric, list(pairs)) for rubric, pairs in shard.work]

    def close(self) -> None:
        self._judges.clear()
        self.backends.close()


def judge_safely(judge: Judge, rubric: Rubric, pairs: list[tuple[str, str]]) -> list[Judgment]:
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
