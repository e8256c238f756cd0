"""Stable content hashes: the ids of samples, prompts, generations and judgments."""

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def stream_sha256(f: Readable) -> str:
    """The sha256 hex digest of everything left in a binary stream, read 1 MiB at a time."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    with path.open("rb") as f:
        return stream_sha256(f)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def stable_hash(*parts: Any, length: int = 16) -> str:
    """A hex digest of the canonical JSON of `parts`; the same parts give the same id on every machine."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is None:
        raise TypeError(f"cannot hash {type(value).__name__}")
    return dump(mode="json")
