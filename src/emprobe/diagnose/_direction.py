"""Misalignment directions: the difference in means between activations on misaligned and aligned answers,
balanced by downsampling, with the held-out separation (AUC) of every captured layer.

A direction file is JSON: the vector and everything needed to use it honestly later (the model identity and
width it belongs to, the layer and hook, the position rule, the runs, judge and thresholds it came from).
"""

from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from emprobe.condition import Direction, LayerSeparation
from emprobe.diagnose._capture import load_array
from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256
from emprobe.store import ActivationArray, Store


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
