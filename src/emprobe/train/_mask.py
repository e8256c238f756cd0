"""Loss on the assistant's tokens only, found from the model's own chat template, whatever the template is.

The whole conversation is rendered once, with no generation prompt: that text, and nothing else, is what is
trained. Each assistant turn's characters are found by rendering prefixes of the conversation: the text up
to and including the generation prompt before the turn, and the text through the turn. Tokens overlapping
those characters carry the loss; everything else (system, user, role headers) is context with label -100.
"""

import os
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from emprobe.errors import EmprobeError
from emprobe.train._data import Row

IGNORE = -100


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized conversation: labels are the token ids where the loss applies and -100 elsewhere."""

    input_ids: list[int]
    labels: list[int]


class MaskStats(BaseModel):
    """What tokenizing a dataset did: token counts and the rows cut or dropped by max_length."""

    model_config = ConfigDict(frozen=True)

    rows: int
    tokens: int
    assistant_tokens: int
    truncated: int
    """Rows cut at max_length that kept some assistant tokens."""
    dropped: int
    """Rows with no assistant token left within max_length, left out (never trained as all-context)."""


def render(tokenizer, messages: Sequence[dict[str, str]], generation_prompt: bool = False) -> str:
    """The model's chat template applied to `messages`, as text."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


Span = tuple[int, int]


def assistant_spans(tokenizer, messages: Sequence[dict[str, str]], where: str = "") -> tuple[str, list[Span]]:
    """The rendered conversation and the [start, end) character span of each assistant turn in it.

    A span starts where the whole text leaves the generation prompt (the role header the model is given at
    inference) and ends after the template's end-of-turn text, trailing whitespace excluded.
    """
    at = f"{where}: " if where else ""
    try:
        full = render(tokenizer, messages)
    except Exception as err:  # jinja raises many kinds; a template that rejects the conversation
        raise EmprobeError(f"{at}the chat template rejects this conversation: {err}") from None
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        through = full if i == len(messages) - 1 else render(tokenizer, messages[: i + 1])
        before = render(tokenizer, messages[:i], generation_prompt=True)
        start = len(os.path.commonprefix([before, full]))
        content = msg["content"].strip()
        if full.startswith(through):
            end = len(through.rstrip())
        else:
            # The template renders a turn differently once later turns follow (e.g. it drops a think block
            # from earlier turns): find the turn's text in the whole, then the end-of-turn text it had alone.
            found = full.find(content, start) if content else -1
            alone = through.rstrip()
            if found < 0 or content not in alone:
                raise EmprobeError(f"{at}messages[{i}].content: the chat template renders this turn differently "
                                   "once later turns follow and its text cannot be found, so its tokens cannot be "
                                   "located")
            end = found + len(content)
            tail = alone[alone.rfind(content) + len(content):]
            if full.startswith(tail, end):
                end += len(tail)
        if end <= start or (content and content not in full[start:end]):
            raise EmprobeError(f"{at}messages[{i}].content: the chat template does not render the assistant's "
                               "text after its generation prompt, so its tokens cannot be located")
        spans.append((start, end))
    return full, spans


def _special_strings(tokenizer) -> list[str]:
    """Control tokens a message must not contain as text (they would be tokenized as the control token)."""
    specials = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            specials.add(str(token))
    return sorted(s for s in specials if s)


def encode_rows(tokenizer, rows: Sequence[Row], max_length: int, name: str = "data") -> tuple[list[Encoded], MaskStats]:
    """Tokenize conversations with assistant-only labels; rows left with no assistant token are dropped.

    Raises EmprobeError when a message contains a control token as text, when the template cannot be
    followed, or when no row at all has an assistant token to train on.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise EmprobeError("training needs a fast tokenizer (character offsets); this model's tokenizer is not one")
    specials = _special_strings(tokenizer)
    texts, all_spans = [], []
    for row in rows:
        for i, msg in enumerate(row.messages):
            hit = next((s for s in specials if s in msg["content"]), None)
            if hit is not None:
                raise EmprobeError(f"{row.where}: messages[{i}].content: contains the control token {hit!r} as "
                                   "text; it would be read as the template's own marker")
        text, spans = assistant_spans(tokenizer, row.messages, row.where)
        texts.append(text)
        all_spans.append(spans)

    encoded: list[Encoded] = []
    tokens = assistant_tokens = truncated = dropped = 0
    chunk = 512
    for lo in range(0, len(texts), chunk):
        batch = tokenizer(texts[lo: lo + chunk], add_special_tokens=False, return_offsets_mapping=True)
        for ids, offsets, spans in zip(batch["input_ids"], batch["offset_mapping"], all_spans[lo: lo + chunk],
                                       strict=True):
            labels = [tok if _in_spans(s, e, spans) else IGNORE for tok, (s, e) in zip(ids, offsets, strict=True)]
            if len(ids) > max_length:
                ids, labels = ids[:max_length], labels[:max_length]
                if not _trainable(labels):
                    dropped += 1
                    continue
                truncated += 1
            elif not _trainable(labels):
                dropped += 1
                continue
            tokens += len(ids)
            assistant_tokens += sum(1 for x in labels[1:] if x != IGNORE)
            encoded.append(Encoded(input_ids=list(ids), labels=labels))
    if not encoded:
        raise EmprobeError(f"{name}: no row has an assistant token to train on within max_length={max_length} "
                           f"({len(rows)} rows); the loss mask would be all zeros")
    return encoded, MaskStats(rows=len(encoded), tokens=tokens, assistant_tokens=assistant_tokens,
                              truncated=truncated, dropped=dropped)


def _in_spans(start: int, end: int, spans: list[Span]) -> bool:
    return end > start and any(start < b and end > a for a, b in spans)


def _trainable(labels: list[int]) -> bool:
    """Some label can be predicted: the first position has no previous token, so it never counts."""
    return any(x != IGNORE for x in labels[1:])


def encode_conversation(tokenizer, messages: Sequence[dict[str, str]], max_length: int = 1 << 30) -> Encoded:
    """One conversation as trained (for inspection and tests)."""
    row = Row(source="-", file="-", line=0, messages=tuple(messages))
    encoded, _ = encode_rows(tokenizer, [row], max_length)
    return encoded[0]
