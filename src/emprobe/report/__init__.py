"""Rendering of analysed runs: terminal tables and a self-contained HTML file with charts and a sample browser."""

from emprobe.report._format import p_value, pct, signed_pct
from emprobe.report._html import build_report, build_sweep_report, script_json, write_report, write_sweep_report
from emprobe.report._terminal import (
    attack_table,
    cascade_table,
    consistency_table,
    deltas_table,
    domain_table,
    judge_errors_table,
    label_table,
    labels_table,
    outside_note,
    rates_table,
    reasoning_table,
    steering_table,
    summary_table,
    sweep_table,
    trigger_table,
    turns_table,
)

__all__ = [
    "attack_table",
    "build_report",
    "build_sweep_report",
    "cascade_table",
    "consistency_table",
    "deltas_table",
    "domain_table",
    "judge_errors_table",
    "label_table",
    "labels_table",
    "outside_note",
    "p_value",
    "pct",
    "rates_table",
    "reasoning_table",
    "script_json",
    "signed_pct",
    "steering_table",
    "summary_table",
    "sweep_table",
    "trigger_table",
    "turns_table",
    "write_report",
    "write_sweep_report",
]
