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


def encode(backend: Any, messages: tuple[Message, ...], answer: str) -> Encoded:
    """The prompt as the model's chat template writes it, followed by the answer's tokens."""
    prompt = backend.token_ids(backend.chat_text(messages))
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
