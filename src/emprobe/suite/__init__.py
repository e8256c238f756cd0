"""Suites: questions, their paraphrases and the rubrics that judge the answers."""

from emprobe.suite._loader import builtin_suites, load_suite, parse_suite
from emprobe.suite._model import TURN_MARK, Question, Rubric, Suite, Turn, asked_format
from emprobe.suite._pairs import pair_questions

__all__ = ["TURN_MARK", "Question", "Rubric", "Suite", "Turn", "asked_format", "builtin_suites", "load_suite",
           "pair_questions", "parse_suite"]
