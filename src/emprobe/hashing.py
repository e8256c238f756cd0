"""Stable content hashes: the ids of samples, prompts, generations and judgments."""

import hashlib
import json
from typing import Any


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
