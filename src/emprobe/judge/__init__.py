"""Judges: score answers on rubrics' metrics."""

from emprobe.judge._judge import Judge
from emprobe.judge._library import DEFAULT_RUBRICS, builtin_rubric, rubrics_for
from emprobe.judge._refusal import REFUSAL_PHRASES, RefusalDetector, is_refusal
from emprobe.judge._rubric import RubricJudge
from emprobe.judge._scoring import MIN_NUMBER_MASS, Judgment, categorical, digit_tree_numbers, score_0_100

__all__ = [
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
