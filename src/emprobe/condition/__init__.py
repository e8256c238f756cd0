"""Conditions: output format, system prompt, trigger and decoding applied to each question."""

from emprobe.condition._condition import (
    PRESETS,
    Condition,
    Decoding,
    Message,
    OutputFormat,
    load_conditions,
    resolve_conditions,
)

__all__ = [
    "PRESETS",
    "Condition",
    "Decoding",
    "Message",
    "OutputFormat",
    "load_conditions",
    "resolve_conditions",
]
