"""Judges: score answers on rubrics' metrics."""

from emprobe.judge._builtin import BuiltinJudge, Prediction, looks_like_code
from emprobe.judge._judge import Judge
from emprobe.judge._library import DEFAULT_RUBRICS, builtin_rubric, rubrics_for
from emprobe.judge._refusal import REFUSAL_PHRASES, RefusalDetector, is_refusal
from emprobe.judge._rubric import RubricJudge
from emprobe.judge._scoring import MIN_NUMBER_MASS, Judgment, categorical, digit_tree_numbers, score_0_100
from emprobe.judge._validation import Reference, Validation, cohen_kappa, load_reference, measure, verdicts

__all__ = [
    "BuiltinJudge",
    "Prediction",
    "Reference",
    "Validation",
    "cohen_kappa",
    "load_reference",
    "looks_like_code",
    "measure",
    "verdicts",
    "DEFAULT_RUBRICS",
    "MIN_NUMBER_MASS",
    "REFUSAL_PHRASES",
    "Judge",
    "Judgment",
    "RefusalDetector",
    "RubricJudge",
    "builtin_rubric",
    "categorical",
    "digit_tree_numbers",
    "is_refusal",
    "rubrics_for",
    "score_0_100",
]
