"""Teacher forcing on a local model: a chat prompt and a given answer as one right-padded token sequence."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.model import Backend


@dataclass(frozen=True)
class Encoded:
    """The token ids of prompt + answer, and how many of them are the prompt's."""

    ids: list[int]
    prompt_len: int

    @property
    def answer_len(self) -> int:
        return len(self.ids) - self.prompt_len


def local(backend: Backend, spec: str) -> Any:
    """The backend itself when it holds a local transformers model; one line otherwise."""
    if not isinstance(getattr(backend, "model", None), torch.nn.Module) or not hasattr(backend, "chat_text"):
        raise EmprobeError(f"model {spec!r} is not a local transformers model: diagnostics read its hidden states, "
                           "which only the hf backend exposes")
    return backend


def encode(backend: Any, messages: tuple[Message, ...], answer: str, thinking: bool | None = None) -> Encoded:
    """The prompt as the model's chat template writes it (with the thinking switch the answer was generated
    under), followed by the answer's tokens."""
    prompt = backend.token_ids(backend.chat_text(messages, thinking))
    return Encoded(prompt + backend.token_ids(answer), len(prompt))


def by_length(encoded: Sequence[Encoded], rows: int) -> Iterator[list[int]]:
    """Indices of `encoded` in batches of at most `rows`, similar lengths together (less padding)."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for start in range(0, len(order), rows):
        yield order[start : start + rows]


def padded(batch: Sequence[Encoded], pad_id: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), right-padded, so every row's positions start at 0."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    return ids.to(device), mask.to(device)


def answer_span(e: Encoded) -> slice:
    """The positions whose next-token prediction is an answer token (the last prompt token to the one before the
    last answer token)."""
    return slice(e.prompt_len - 1, len(e.ids) - 1)


@dataclass(frozen=True)
class Forced:
    """One teacher-forced answer, on the model's device: the log-probs over the vocabulary at each position that
    predicts an answer token, the answer's token ids, and (when asked for) the final hidden states there (the
    unembedding's input)."""

    logprobs: torch.Tensor
    tokens: torch.Tensor
    hidden: torch.Tensor | None

    @property
    def token_logprobs(self) -> torch.Tensor:
        """The log-prob of each answer token."""
        return self.logprobs.gather(-1, self.tokens[:, None]).squeeze(-1)


@torch.inference_mode()
def forced(backend: Any, batch: Sequence[Encoded], hidden: bool = False) -> list[Forced]:
    """Teacher-force a batch of prompt + answer sequences in one forward pass."""
    ids, mask = padded(batch, backend.pad_id, backend.device)
    kept: list[torch.Tensor] = []
    handle = backend.model.get_output_embeddings().register_forward_pre_hook(
        lambda module, args: kept.append(args[0])) if hidden else None
    try:
        logits = backend.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    finally:
        if handle is not None:
            handle.remove()
    out = []
    for row, e in enumerate(batch):
        span = answer_span(e)
        out.append(Forced(logprobs=torch.log_softmax(logits[row, span].float(), -1),
                          tokens=ids[row, span.start + 1 : span.stop + 1],
                          hidden=kept[0][row, span].double() if hidden else None))
    return out
