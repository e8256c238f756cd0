"""Pending samples cut into shards for workers: all samples of one prompt together, prompts of similar length in
the same shard."""

from collections.abc import Iterable, Iterator

from emprobe.condition import Message
from emprobe.model import GenerationRequest


def generation_shards(pages: Iterable[list[GenerationRequest]], size: int,
                      window: int) -> Iterator[list[GenerationRequest]]:
    """Shards of at most `size` requests. Pages come with the samples of one prompt together; up to `window`
    requests are read ahead and their prompts sorted by length, so that a shard's prompts pad to a similar
    length. A prompt's samples are split only when they alone exceed `size`."""
    buffer: list[GenerationRequest] = []
    for page in pages:
        buffer.extend(page)
        if len(buffer) >= window:
            cut = len(buffer)  # the last prompt's samples may go on in the next page: they wait for it
            while cut > 0 and buffer[cut - 1].messages == buffer[-1].messages:
                cut -= 1
            ready, buffer = (buffer[:cut], buffer[cut:]) if cut else (buffer, [])
            yield from _pack(ready, size)
    yield from _pack(buffer, size)


def _pack(requests: list[GenerationRequest], size: int) -> Iterator[list[GenerationRequest]]:
    groups: dict[tuple[Message, ...], list[GenerationRequest]] = {}
    for request in requests:
        groups.setdefault(request.messages, []).append(request)
    shard: list[GenerationRequest] = []
    for messages in sorted(groups, key=_length):
        group = groups[messages]
        if shard and len(shard) + len(group) > size:
            yield shard
            shard = []
        while len(group) > size:
            yield group[:size]
            group = group[size:]
        shard.extend(group)
    if shard:
        yield shard


def _length(messages: tuple[Message, ...]) -> int:
    return sum(len(m.content) for m in messages)
