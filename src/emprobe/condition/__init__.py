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
from emprobe.condition._sweep import expand, parse_sweep

__all__ = [
    "PRESETS",
    "Condition",
    "Decoding",
    "Message",
    "OutputFormat",
    "load_conditions",
    "expand",
    "parse_sweep",
    "resolve_conditions",
]
