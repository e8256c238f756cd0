"""A third-party emprobe plugin, installed only by the tests: a backend that echoes and a judge that counts."""

from emprobe.judge import Judgment
from emprobe.model import BackendEntry, GenerationResult

LOADED: list[str] = []
"""The specs of every backend this process loaded."""


class EchoBackend:
    """Answers every prompt with its own last message and the sample's seed modulo 5."""

    def __init__(self, ref):
        self.identity = ref.identity
        self.info = {"backend": "echo"}
        LOADED.append(ref.spec)

    def generate(self, requests):
        for r in requests:
            yield GenerationResult(key=r.key, text=f"{r.messages[-1].content} #{r.decoding.seed % 5}",
                                   finish_reason="stop", completion_tokens=3)

    def close(self):
        pass


ECHO = BackendEntry(load=EchoBackend, identity=lambda name, adapter: (f"echo:{name}", None))


class LengthJudge:
    """Scores every metric as the answer's length in characters, capped at 100."""

    name = "length"

    def __init__(self, version: str):
        self.identity = f"length:{version or 'v1'}"

    def judge(self, rubric, pairs):
        return [Judgment(metric=rubric.name, score=float(min(100, len(answer)))) for _, answer in pairs]


def length_judge(argument, context):
    return LengthJudge(argument)
