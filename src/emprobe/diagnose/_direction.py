"""Misalignment directions: the difference in means between activations on misaligned and aligned answers,
balanced by downsampling, with the held-out separation (AUC) of every captured layer.

A direction file is JSON: the vector and everything needed to use it honestly later (the model identity and
width it belongs to, the layer and hook, the position rule, the runs, judge and thresholds it came from).
"""

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError
from sklearn.metrics import roc_auc_score

from emprobe.diagnose._capture import load_array
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.hashing import file_sha256
from emprobe.rules import Thresholds
from emprobe.store import ActivationArray, Store


class LayerSeparation(BaseModel):
    """How well one layer's direction separates held-out misaligned from aligned answers."""

    layer: int
    auc: float
    """Mean over folds of the AUC of held-out answers projected on the direction fitted without them."""
    norm: float
    """The norm of the direction fitted on every balanced answer."""


class Direction(BaseModel):
    """A direction in one model's residual stream at one layer, and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["emprobe-direction/1"] = "emprobe-direction/1"
    model: str
    """The identity of the model whose activations it was computed from."""
    width: int
    layer: int
    """The residual stream after this many decoder blocks."""
    hook: str
    """The module whose output it lives in (a decoder block of `model`)."""
    position: str
    """How activations were pooled: answer-mean, prompt-mean or last."""
    operation: Literal["steer", "ablate"]
    """What it is meant for: added (`alpha * vector`) or projected out (along `vector / |vector|`)."""
    runs: dict[str, str]
    """The run whose misaligned answers and the run whose aligned answers it came from."""
    judge: str
    thresholds: Thresholds
    aligned_above: float
    counts: dict[str, int]
    """Misaligned and aligned answers available, and how many of each were used (balanced)."""
    separation: list[LayerSeparation]
    seed: int
    vector: list[float]

    def check(self, model: str, width: int) -> None:
        """One line when this direction belongs to another model (identity) or another width."""
        if width != self.width:
            raise EmprobeError(f"this direction has width {self.width} but the model's residual stream has width "
                               f"{width}: it belongs to another model ({self.model})")
        if model != self.model:
            raise EmprobeError(f"this direction was computed on model {self.model}, not {model}; refusing to apply "
                               "it to another model")

    @classmethod
    def load(cls, path: Path) -> "Direction":
        """A direction file, or one line saying why it is not one."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise EmprobeError(f"{path}: direction file not found") from None
        except ValidationError as err:
            raise EmprobeError(f"{path}: not an emprobe direction file ({first_validation_error(err)})") from None


def difference_of_means(misaligned: np.ndarray, aligned: np.ndarray) -> np.ndarray:
    """mean(misaligned) - mean(aligned), rows are answers."""
    return misaligned.mean(0) - aligned.mean(0)


def held_out_auc(misaligned: np.ndarray, aligned: np.ndarray, folds: int, rng: np.random.Generator) -> float:
    """Mean AUC over `folds` stratified folds of held-out answers projected on the direction fitted on the rest."""
    fold_of = [rng.permutation(len(x)) % folds for x in (misaligned, aligned)]
    aucs = []
    for k in range(folds):
        train = [x[f != k] for x, f in zip((misaligned, aligned), fold_of, strict=True)]
        test = [x[f == k] for x, f in zip((misaligned, aligned), fold_of, strict=True)]
        v = difference_of_means(*train)
        scores = np.concatenate([test[0] @ v, test[1] @ v])
        truth = np.r_[np.ones(len(test[0])), np.zeros(len(test[1]))]
        aucs.append(roc_auc_score(truth, scores))
    return float(np.mean(aucs))


def fit(store: Path, misaligned: dict[int, ActivationArray], aligned: dict[int, ActivationArray],
        ids: tuple[set[str], set[str]], layer: int | None, min_answers: int, folds: int, seed: int, describe: str
        ) -> tuple[int, np.ndarray, list[LayerSeparation], dict[str, int]]:
    """The layer (by default the one with the best held-out AUC) and the direction there, from the misaligned
    answers' rows of one capture and the aligned answers' rows of another (or the same); every captured layer's
    held-out separation; the counts. `describe` names the runs and judge in the error when there are too few
    answers."""
    layers = sorted(set(misaligned) & set(aligned))
    if layer is not None and layer not in layers:
        raise EmprobeError(f"layer {layer} was not captured for both runs (captured: {', '.join(map(str, layers))})")
    loaded = {n: (load_array(store, misaligned[n]), load_array(store, aligned[n])) for n in layers}
    available = [sorted(wanted.intersection(*(set(pair[side][0]) for pair in loaded.values())))
                 for side, wanted in enumerate(ids)]
    counts = {"misaligned": len(available[0]), "aligned": len(available[1])}
    if min(counts.values()) < min_answers:
        raise EmprobeError(f"{describe}: {counts['misaligned']} misaligned and {counts['aligned']} aligned captured "
                           f"answers; a direction needs at least {min_answers} of each")
    used = counts["used_each"] = min(counts["misaligned"], counts["aligned"])
    rng = np.random.default_rng(seed)  # balanced: the larger class is downsampled
    chosen = [[group[i] for i in np.sort(rng.choice(len(group), used, replace=False))] for group in available]
    separation, directions = [], {}
    for n, pair in loaded.items():
        x = []
        for (row_ids, array), group in zip(pair, chosen, strict=True):
            row_of = {s: i for i, s in enumerate(row_ids)}
            x.append(np.asarray(array[[row_of[s] for s in group]], dtype=np.float64))
        directions[n] = difference_of_means(x[0], x[1])
        auc = held_out_auc(x[0], x[1], min(folds, used), np.random.default_rng(seed))
        separation.append(LayerSeparation(layer=n, auc=auc, norm=float(np.linalg.norm(directions[n]))))
    best = layer if layer is not None else max(separation, key=lambda s: s.auc).layer
    return best, directions[best], separation, counts


def save_direction(db: Store, direction: Direction, path: Path) -> None:
    """Write the direction file and record it (without its vector) in the store."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(direction.model_dump_json(indent=1))
    db.save_direction(file_sha256(path), str(path.resolve()), direction.runs["misaligned"], direction.model,
                      direction.layer, direction.model_dump(mode="json", exclude={"vector"}))
