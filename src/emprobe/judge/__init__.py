"""Judges: score answers on rubrics' metrics; `load_judge(spec)` builds one by name."""

from emprobe.judge._builtin import BuiltinJudge, Prediction, looks_like_code
from emprobe.judge._domain import DomainCheck, DomainReference
from emprobe.judge._first_token import FirstTokenJudge, judgment_from_tokens
from emprobe.judge._judge import Judge
from emprobe.judge._library import DEFAULT_RUBRICS, builtin_rubric, rubrics_for
from emprobe.judge._refusal import REFUSAL_PHRASES, RefusalDetector, is_refusal
from emprobe.judge._registry import (
    JUDGES,
    JudgeContext,
    JudgeFactory,
    check_judge,
    check_screen,
    load_judge,
    register_judge,
)
from emprobe.judge._rubric import LABEL_PREFIX, RubricJudge
from emprobe.judge._scoring import MIN_NUMBER_MASS, Judgment, categorical, digit_tree_numbers, score_0_100
from emprobe.judge._validation import (
    Reference,
    Validation,
    by_judge,
    cohen_kappa,
    harm_reading,
    load_reference,
    measure,
    target_of,
    verdicts,
)

__all__ = [
    "DEFAULT_RUBRICS",
    "JUDGES",
    "MIN_NUMBER_MASS",
    "REFUSAL_PHRASES",
    "BuiltinJudge",
    "DomainCheck",
    "DomainReference",
    "FirstTokenJudge",
    "Judge",
    "JudgeContext",
    "JudgeFactory",
    "Judgment",
    "Prediction",
    "Reference",
    "RefusalDetector",
    "LABEL_PREFIX",
    "RubricJudge",
    "Validation",
    "builtin_rubric",
    "by_judge",
    "categorical",
    "check_judge",
    "check_screen",
    "cohen_kappa",
    "digit_tree_numbers",
    "is_refusal",
    "judgment_from_tokens",
    "load_judge",
    "harm_reading",
    "load_reference",
    "target_of",
    "looks_like_code",
    "measure",
    "register_judge",
    "rubrics_for",
    "score_0_100",
    "verdicts",
]
