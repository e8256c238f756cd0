"""The interface every generation backend implements, and the records it exchanges with the pipeline."""

from collections.abc import Iterable, Iterator
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from emprobe.condition import Decoding, Message

FinishReason = Literal["stop", "length", "error"]


class GenerationRequest(BaseModel):
    """One sample to generate: its cache key, the chat messages and the decoding (with the sample's seed)."""

    model_config = ConfigDict(frozen=True)

    key: str
    messages: tuple[Message, ...]
    decoding: Decoding


class GenerationResult(BaseModel):
    """What a backend produced for one request."""

    model_config = ConfigDict(frozen=True)

    key: str
    text: str | None
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@runtime_checkable
class Backend(Protocol):
    """Generates answers for chat prompts; implementations batch internally."""

    identity: str
    """Names the exact weights (and adapter), so cached generations are only reused for the same model."""

    info: dict[str, str]
    """Facts a run records: dtype, device, how system prompts are sent (`native` or `merged`)."""

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Yield one result per request, in any order, as batches finish."""
        ...


@runtime_checkable
class ScoringBackend(Protocol):
    """A model whose next-token distribution can be read: what rubric judges need."""

    identity: str

    def chat_text(self, messages: tuple[Message, ...]) -> str:
        """The prompt text the model sees for these messages, ready for the assistant's reply."""
        ...

    def token_ids(self, text: str) -> list[int]:
        """Token ids of `text` as it would appear right after the prompt."""
        ...

    def next_token_logprobs(
        self, prefix: str, suffixes: list[str], branches: list[tuple[int, ...]], token_ids: list[int]
    ) -> list[list[list[float]]]:
        """Log-probabilities of `token_ids` after prefix + suffix + branch, for every suffix and branch."""
        ...
