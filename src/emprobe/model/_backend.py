"""The interfaces backends implement, and the records they exchange with the pipeline."""

from collections.abc import Iterable, Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from emprobe.condition import Decoding, Intervention, Message

FinishReason = Literal["stop", "length", "error"]


class ModelRef(BaseModel):
    """A model spec resolved without loading any weights: which backend serves it and its cache identity."""

    model_config = ConfigDict(frozen=True)

    spec: str
    """What the user wrote: `smollm2-135m`, a folder, `openai-compat:MODEL@URL`, ..."""
    backend: str
    """The registered backend that loads it (`hf`, `openai-compat`, or a plugin's name)."""
    name: str
    """The spec without the backend prefix."""
    adapter: str | None = None
    identity: str
    """Names the exact weights (and adapter): cached generations are only reused for the same identity."""
    location: str | None = None
    """Where the weights are, for backends that read local files."""
    options: dict[str, Any] = {}
    """Backend options, already validated by the backend's options model."""


class GenerationRequest(BaseModel):
    """One sample to generate: its cache key, the chat messages and the decoding (with the sample's seed)."""

    model_config = ConfigDict(frozen=True)

    key: str
    messages: tuple[Message, ...]
    decoding: Decoding
    thinking: bool | None = None
    """The chat template's reasoning switch (`enable_thinking`); None: its default."""
    intervention: Intervention | None = None
    """Steering or ablation while generating; only backends that run the model locally can honour it."""


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
    """Generates answers for chat prompts; implementations batch internally.

    One whose `generate` may run in several threads at once also sets `concurrent = True` (optional: read with
    getattr, so that backends written without it still match this protocol).
    """

    identity: str
    """The identity of the `ModelRef` it was loaded from."""

    info: dict[str, str]
    """Facts a run records: dtype, device, how system prompts are sent (`native` or `merged`)."""

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Yield one result per request, in any order, as batches finish."""
        ...

    def close(self) -> None:
        """Release the model, connections and threads; the backend is not used afterwards."""
        ...


@runtime_checkable
class ScoringBackend(Protocol):
    """A local model whose next-token distribution can be read anywhere: what the rubric judge needs."""

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


class FirstTokenReply(BaseModel):
    """The start of a model's reply: its text and the probabilities of the first token's candidates."""

    model_config = ConfigDict(frozen=True)

    text: str = ""
    probabilities: dict[str, float] | None = None
    """Token text -> probability at the reply's first position; None when the server returns no logprobs."""
    error: str | None = None


@runtime_checkable
class FirstTokenBackend(Protocol):
    """A served model that reports the top candidates of its reply's first token (OpenAI-style logprobs)."""

    identity: str

    def first_tokens(self, prompts: list[tuple[Message, ...]], max_tokens: int = 1,
                     top_logprobs: int = 20) -> list[FirstTokenReply]:
        """One reply per prompt, greedy; `top_logprobs=0` asks for text only."""
        ...


def status_of(part: Any) -> str:
    """A backend's or judge's own one-line status (requests in flight, retries, errors), when it has one."""
    status = getattr(part, "status", None)
    return status() if callable(status) else ""
