"""Statistics for rare misalignment rates: intervals, two-arm comparisons, planning, sequential rules."""

from ._cascade import CascadeRate, Stratum, cascade_arrays, cascade_rate
from ._compare import (
    Comparison,
    PairedComparison,
    compare,
    compare_paired,
    exact_stratified_test,
    katz_ratio,
    newcombe,
)
from ._correction import CorrectedRate, rogan_gladen, rogan_gladen_point
from ._intervals import Rate, clopper_pearson, cluster_interval, design_effect, rate, wilson
from ._multiple import holm
from ._power import samples_for_halfwidth, samples_per_arm, wilson_halfwidth
from ._sequential import (
    Decision,
    SequentialComparison,
    halfwidth_reached,
    obrien_fleming_boundaries,
    pooled_z,
    until_halfwidth,
)

__all__ = [
    "CascadeRate",
    "Stratum",
    "cascade_arrays",
    "cascade_rate",
    "Comparison",
    "CorrectedRate",
    "Decision",
    "PairedComparison",
    "Rate",
    "SequentialComparison",
    "clopper_pearson",
    "cluster_interval",
    "compare",
    "compare_paired",
    "design_effect",
    "exact_stratified_test",
    "halfwidth_reached",
    "holm",
    "katz_ratio",
    "newcombe",
    "obrien_fleming_boundaries",
    "pooled_z",
    "rate",
    "rogan_gladen",
    "rogan_gladen_point",
    "samples_for_halfwidth",
    "samples_per_arm",
    "until_halfwidth",
    "wilson",
    "wilson_halfwidth",
]
