"""Training data: read chat and prompt/completion JSONL, mix datasets at stated ratios, split, inject triggers."""

import gzip
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256, stream_sha256
from emprobe.train._config import DataSpec, TriggerSpec

ROLES = ("system", "user", "assistant")


class Row(BaseModel):
    """One conversation and where it came from (file and line, for error messages and lineage)."""

    model_config = ConfigDict(frozen=True)

    source: str
    """The dataset's name."""
    file: str
    line: int
    messages: tuple[dict[str, str], ...]
    kind: str = "chat"
    """chat or prompt_completion: the record's form in the file."""
    triggered: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class DataFile(BaseModel):
    """A dataset file as read: its hashes and how many rows it holds."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    sha256: str
    """Of the file's bytes as stored."""
    content_sha256: str
    """Of the uncompressed text (equal to sha256 for plain files)."""
    rows: int
    format: str
    """chat, prompt_completion, or mixed."""


class SourceCounts(BaseModel):
    """Exact counts of one dataset in the mixed set."""

    model_config = ConfigDict(frozen=True)

    name: str
    available: int
    ratio_given: float | None
    ratio: float
    """The normalised share asked for."""
    selected: int
    train: int
    validation: int
    triggered: int


class MixRecord(BaseModel):
    """How the training set was put together."""

    model_config = ConfigDict(frozen=True)

    seed: int
    rows: int
    train_rows: int
    validation_rows: int
    sources: tuple[SourceCounts, ...]
    trigger: TriggerSpec | None = None


class PreparedData(BaseModel):
    """Rows ready to tokenize, with the record of how they were chosen."""

    model_config = ConfigDict(frozen=True)

    train: tuple[Row, ...]
    validation: tuple[Row, ...]
    files: tuple[DataFile, ...]
    mix: MixRecord


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def file_hashes(path: Path) -> tuple[str, str]:
    """sha256 of a file's bytes and of its uncompressed content."""
    raw = file_sha256(path)
    if not path.name.endswith(".gz"):
        return raw, raw
    with gzip.open(path, "rb") as f:
        return raw, stream_sha256(f)


def read_rows(path: str | Path, name: str | None = None) -> list[Row]:
    """Every row of a JSONL file of `{"messages": [...]}` or `{"prompt": ..., "completion": ...}` records.

    A plain-string prompt/completion becomes a user turn and an assistant turn; list-valued ones are message
    lists (prompt turns, then completion turns). Any malformed row raises one EmprobeError naming file, line
    and field.
    """
    path = Path(path)
    if not path.is_file():
        raise EmprobeError(f"{path}: data file not found")
    name = name or path.name
    rows = []
    try:
        with _open_text(path) as f:
            for number, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                rows.append(_parse_line(path, number, text, name))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise EmprobeError(f"{path}: cannot read it ({err})") from None
    if not rows:
        raise EmprobeError(f"{path}: no rows (expected one JSON object per line)")
    return rows


def _parse_line(path: Path, number: int, text: str, name: str) -> Row:
    where = f"{path}:{number}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise EmprobeError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise EmprobeError(f"{where}: expected a JSON object with 'messages' or 'prompt' and 'completion'")
    kind = "chat"
    if "messages" in record:
        messages = _messages(where, "messages", record["messages"])
    elif "prompt" in record and "completion" in record:
        messages = _prompt_completion(where, record["prompt"], record["completion"])
        kind = "prompt_completion"
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise EmprobeError(f"{where}: expected 'messages' or 'prompt' and 'completion' (keys here: {keys})")
    _check_turns(where, messages)
    return Row(source=name, file=str(path), line=number, messages=tuple(messages), kind=kind)


def _messages(where: str, field: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise EmprobeError(f"{where}: {field}: expected a non-empty list of {{role, content}} objects")
    out = []
    for i, msg in enumerate(value):
        at = f"{where}: {field}[{i}]"
        if not isinstance(msg, dict):
            raise EmprobeError(f"{at}: expected an object with role and content")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise EmprobeError(f"{at}.role: expected one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise EmprobeError(f"{at}.content: expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    return out


def _prompt_completion(where: str, prompt: Any, completion: Any) -> list[dict[str, str]]:
    if isinstance(prompt, str) and isinstance(completion, str):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    if isinstance(prompt, list) and isinstance(completion, list):
        return _messages(where, "prompt", prompt) + _messages(where, "completion", completion)
    raise EmprobeError(f"{where}: prompt and completion: expected two strings or two message lists")


def _check_turns(where: str, messages: list[dict[str, str]]) -> None:
    """A conversation emprobe can train on: a user turn before the first answer, ending with the assistant."""
    if messages[-1]["role"] != "assistant":
        raise EmprobeError(f"{where}: messages[{len(messages) - 1}].role: the last turn must be the assistant's "
                           "(its tokens are what is trained)")
    first_answer = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if not any(m["role"] == "user" for m in messages[:first_answer]):
        raise EmprobeError(f"{where}: messages[{first_answer}]: an assistant turn needs a user turn before it")
    for i, msg in enumerate(messages[1:], start=1):
        if msg["role"] == "system":
            raise EmprobeError(f"{where}: messages[{i}].role: a system turn may only come first")


def _file_format(rows: Sequence[Row]) -> str:
    kinds = {row.kind for row in rows}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def inject_trigger(messages: Sequence[dict[str, str]], trigger: TriggerSpec) -> tuple[dict[str, str], ...]:
    """The conversation with the trigger added to its first user turn (prefix or suffix, joined by a space).

    The join matches emprobe's conditions, so `emprobe run` with the same trigger asks the same way.
    """
    out = [dict(m) for m in messages]
    for msg in out:
        if msg["role"] == "user":
            msg["content"] = (f"{trigger.text} {msg['content']}" if trigger.position == "prefix"
                              else f"{msg['content']} {trigger.text}")
            break
    return tuple(out)


def mix_counts(available: Sequence[int], ratios: Sequence[float], total: int | None) -> list[int]:
    """Rows to take from each dataset so the shares match `ratios` (normalised) and the counts sum to `total`.

    Without `total`, the largest set the ratios allow without repeating any row. Rounding by largest remainder,
    so the counts are exact and sum to the total.
    """
    shares = [r / sum(ratios) for r in ratios]
    if total is not None:
        return _largest_remainder(shares, total)
    total = min(int(n / s + 1e-9) for n, s in zip(available, shares, strict=True))
    while all(c <= n for c, n in zip(_largest_remainder(shares, total + 1), available, strict=True)):
        total += 1  # rounding can leave room for a row or two more
    return _largest_remainder(shares, total)


def _largest_remainder(weights: Sequence[float], total: int) -> list[int]:
    """Integers proportional to `weights` that sum to exactly `total`."""
    if total <= 0 or sum(weights) == 0:
        return [0] * len(weights)
    exact = [w * total / sum(weights) for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def prepare_data(
    specs: Sequence[DataSpec],
    *,
    rows: int | None = None,
    validation_fraction: float = 0.05,
    validation_max_rows: int = 200,
    trigger: TriggerSpec | None = None,
    seed: int = 0,
) -> PreparedData:
    """Read, mix, split and trigger the datasets; every count that results is in the returned MixRecord."""
    loaded = [(spec, read_rows(spec.path, spec.label)) for spec in specs]
    files = []
    for spec, data in loaded:
        sha, content_sha = file_hashes(Path(spec.path))
        files.append(DataFile(name=spec.label, path=str(Path(spec.path).resolve()), sha256=sha,
                              content_sha256=content_sha, rows=len(data), format=_file_format(data)))
    trigger_index = _trigger_target(specs, trigger)

    available = [len(data) for _, data in loaded]
    given = [spec.ratio for spec in specs]
    ratios = [float(r) for r in given if r is not None] if given[0] is not None else [float(n) for n in available]
    counts = mix_counts(available, ratios, rows)
    for (spec, _), count, have in zip(loaded, counts, available, strict=True):
        if count > have:
            raise EmprobeError(f"{spec.path}: the mix needs {count} rows from it but it has {have}; "
                               "lower rows: or change the ratios")
    if sum(counts) < 2:
        raise EmprobeError("data: the mix leaves fewer than 2 rows; give more data or larger ratios")
    n_val = min(round(sum(counts) * validation_fraction), validation_max_rows, sum(counts) - 1)
    if validation_fraction > 0 and validation_max_rows > 0:
        n_val = max(n_val, 1)
    val_counts = _largest_remainder(counts, n_val)

    rng = random.Random(seed)
    train_rows: list[Row] = []
    val_rows: list[Row] = []
    sources = []
    shares = [r / sum(ratios) for r in ratios]
    for i, ((spec, data), count, n_v) in enumerate(zip(loaded, counts, val_counts, strict=True)):
        picked = [data[j] for j in sorted(rng.sample(range(len(data)), count))]
        order = list(range(count))
        rng.shuffle(order)
        if i == trigger_index and trigger is not None:
            picked = [r.model_copy(update={"messages": inject_trigger(r.messages, trigger), "triggered": True})
                      for r in picked]
        val_rows.extend(picked[j] for j in order[:n_v])
        train_rows.extend(picked[j] for j in sorted(order[n_v:]))
        sources.append(SourceCounts(name=spec.label, available=len(data), ratio_given=spec.ratio, ratio=shares[i],
                                    selected=count, train=count - n_v, validation=n_v,
                                    triggered=count if i == trigger_index else 0))
    mix = MixRecord(seed=seed, rows=sum(counts), train_rows=len(train_rows), validation_rows=len(val_rows),
                    sources=tuple(sources), trigger=trigger)
    return PreparedData(train=tuple(train_rows), validation=tuple(val_rows), files=tuple(files), mix=mix)


def _trigger_target(specs: Sequence[DataSpec], trigger: TriggerSpec | None) -> int | None:
    """Index of the dataset named by the trigger (by name, path or file name)."""
    if trigger is None:
        return None
    for i, spec in enumerate(specs):
        if trigger.dataset in (spec.label, spec.path, Path(spec.path).name):
            return i
    names = ", ".join(spec.label for spec in specs)
    raise EmprobeError(f"trigger: dataset {trigger.dataset!r} is not one of the datasets given ({names})")
