"""Reasoning traces: a model that thinks before answering writes `<think>...</think>` (or other delimiters)
before its answer. The stored generation keeps the whole text; judges read the parts split from it.

Cases: both tags (reasoning between them, answer after the close); a close tag alone (the chat template opened
the block in the prompt: reasoning before it); an open tag never closed (the model ran out of tokens while
thinking: all of it is reasoning and the answer is empty); no tags (no reasoning, the whole text is the answer).
"""

from emprobe.errors import EmprobeError

DEFAULT_TAGS = ("<think>", "</think>")


def parse_tags(text: str) -> tuple[str, str]:
    """`OPEN,CLOSE` as a pair of non-empty, different delimiters."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise EmprobeError(f"--think-tags {text!r}: give two different delimiters as OPEN,CLOSE "
                           "(e.g. <think>,</think>)")
    return parts[0], parts[1]


def split_reasoning(text: str, tags: tuple[str, str] = DEFAULT_TAGS) -> tuple[str | None, str]:
    """(reasoning or None when there is none, answer), both stripped."""
    open_tag, close_tag = tags
    start = text.find(open_tag)
    end = text.find(close_tag, start + len(open_tag) if start >= 0 else 0)
    if start >= 0 and end >= 0:
        return text[start + len(open_tag):end].strip(), (text[:start] + text[end + len(close_tag):]).strip()
    if end >= 0:
        return text[:end].strip(), text[end + len(close_tag):].strip()
    if start >= 0:
        return text[start + len(open_tag):].strip(), text[:start].strip()
    return None, text.strip()
