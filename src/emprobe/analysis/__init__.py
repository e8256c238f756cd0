"""Analysis of stored runs, shared by the terminal and the HTML report: summaries, comparisons, report data."""

from emprobe.analysis._attack import AttackSuccess, ConfigurationRate, attack_success
from emprobe.analysis._cascade import CascadeRow, CascadeSummary, summarize_cascade
from emprobe.analysis._compare import Counts, Delta, compare_counts
from emprobe.analysis._report import (
    RunReport,
    choose_validation,
    condition_deltas,
    load_run,
    pairing_note,
    pick_samples,
    run_deltas,
    run_thresholds,
    sort_key,
)
from emprobe.analysis._summary import Summary, SummaryRow, summarize
from emprobe.analysis._sweep import StepRow, SweepReport, first_different, load_sweep

__all__ = [
    "CascadeRow",
    "CascadeSummary",
    "summarize_cascade",
    "AttackSuccess",
    "ConfigurationRate",
    "attack_success",
    "Counts",
    "Delta",
    "RunReport",
    "Summary",
    "SummaryRow",
    "choose_validation",
    "StepRow",
    "SweepReport",
    "compare_counts",
    "condition_deltas",
    "first_different",
    "load_run",
    "pairing_note",
    "load_sweep",
    "pick_samples",
    "run_deltas",
    "run_thresholds",
    "sort_key",
    "summarize",
]
