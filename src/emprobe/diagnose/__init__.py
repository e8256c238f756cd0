"""Diagnostics on local models over stored answers: activations, misalignment directions, token-level
divergence between two models, and preference-pair metrics (ranking accuracy, CHES)."""

from emprobe.diagnose._capture import (
    LayerCapture,
    arrays_dir,
    capture_run,
    decoder_layers,
    load_array,
    parse_layers,
)
from emprobe.diagnose._direction import (
    Direction,
    LayerSeparation,
    difference_of_means,
    fit,
    held_out_auc,
    save_direction,
)
from emprobe.diagnose._divergence import diverge_run, top_tokens
from emprobe.diagnose._forward import local
from emprobe.diagnose._pairs import Pair, ches, ranking_accuracy, read_pairs, score_pairs
from emprobe.rules import POSITIONS

__all__ = [
    "POSITIONS",
    "Direction",
    "LayerCapture",
    "LayerSeparation",
    "Pair",
    "arrays_dir",
    "capture_run",
    "ches",
    "decoder_layers",
    "difference_of_means",
    "diverge_run",
    "fit",
    "held_out_auc",
    "load_array",
    "local",
    "parse_layers",
    "ranking_accuracy",
    "read_pairs",
    "save_direction",
    "score_pairs",
    "top_tokens",
]
