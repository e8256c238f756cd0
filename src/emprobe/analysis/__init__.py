"""Analysis of stored runs, shared by the terminal and the HTML report: summaries, comparisons, report data."""

from emprobe.analysis._attack import BEST_OF_N_NOTE, AttackSuccess, ConfigurationRate, attack_success
from emprobe.analysis._cascade import CascadeRow, CascadeSummary, summarize_cascade
from emprobe.analysis._compare import Counts, Delta, compare_counts
from emprobe.analysis._consistency import CONSISTENCY_NOTE, ConsistencyRow, consistency_rows
from emprobe.analysis._divergence import (
    DivergenceSection,
    GroupDivergence,
    ShadedAnswer,
    by_group,
    divergence_sections,
    verdict_groups,
)
from emprobe.analysis._domain import domain_checks
from emprobe.analysis._framing import COMPLIANCE_JUDGE, COMPLIANCE_NOTE, ComplianceGap, compliance_gaps
from emprobe.analysis._labels import LabelRow, label_rows
from emprobe.analysis._reasoning import ReasoningRow, reasoning_rows
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
from emprobe.analysis._steering import STEERING_NOTE, InterventionRate, SteeringRow, baseline_note, steering_rows
from emprobe.analysis._summary import Summary, SummaryRow, summarize
from emprobe.analysis._sweep import StepRow, SweepReport, first_different, load_sweep
from emprobe.analysis._trigger import TriggerGap, trigger_gaps
from emprobe.analysis._turns import TurnRow, turn_rows

__all__ = [
    "LabelRow",
    "label_rows",
    "CONSISTENCY_NOTE",
    "ConsistencyRow",
    "consistency_rows",
    "CascadeRow",
    "CascadeSummary",
    "summarize_cascade",
    "TurnRow",
    "turn_rows",
    "DivergenceSection",
    "GroupDivergence",
    "ShadedAnswer",
    "by_group",
    "divergence_sections",
    "verdict_groups",
    "ReasoningRow",
    "reasoning_rows",
    "COMPLIANCE_JUDGE",
    "COMPLIANCE_NOTE",
    "ComplianceGap",
    "compliance_gaps",
    "BEST_OF_N_NOTE",
    "AttackSuccess",
    "ConfigurationRate",
    "attack_success",
    "Counts",
    "InterventionRate",
    "STEERING_NOTE",
    "SteeringRow",
    "steering_rows",
    "baseline_note",
    "domain_checks",
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
    "TriggerGap",
    "trigger_gaps",
]
