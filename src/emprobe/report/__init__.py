"""Reports: terminal tables and a self-contained HTML file with charts, comparisons and a sample browser."""

from emprobe.report._build import RunReport, condition_deltas, load_run, pick_samples, run_deltas
from emprobe.report._compare import Delta, compare_counts
from emprobe.report._data import ReadStore, SampleRow
from emprobe.report._html import build_report, script_json, write_report
from emprobe.report._terminal import deltas_table, judge_errors_table, rates_table

__all__ = [
    "Delta",
    "ReadStore",
    "RunReport",
    "SampleRow",
    "build_report",
    "compare_counts",
    "condition_deltas",
    "deltas_table",
    "judge_errors_table",
    "load_run",
    "pick_samples",
    "rates_table",
    "run_deltas",
    "script_json",
    "write_report",
]
