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
from emprobe.condition._framing import Framing, framed, load_framing
from emprobe.condition._intervention import Direction, Intervention, LayerSeparation
from emprobe.condition._reasoning import DEFAULT_TAGS, parse_tags, split_reasoning
from emprobe.condition._sweep import expand, parse_sweep
from emprobe.condition._trigger import read_triggers, untriggered, with_triggers

__all__ = [
    "DEFAULT_TAGS",
    "parse_tags",
    "split_reasoning",
    "Framing",
    "framed",
    "load_framing",
    "PRESETS",
    "Condition",
    "Direction",
    "Intervention",
    "LayerSeparation",
    "Decoding",
    "Message",
    "OutputFormat",
    "load_conditions",
    "expand",
    "parse_sweep",
    "read_triggers",
    "resolve_conditions",
    "untriggered",
    "with_triggers",
]
