"""How unlike the built-in judge's training data a set of answers is, and the judge's error where it was as unlike.

Each (question, answer) is read by the base MiniLM (without the judge's deltas) as the judge reads it, and its
distance is 1 - the cosine similarity of its mean-pooled state to the nearest of the training data's centroids
(`builtin/domain.npz`, written by `scripts/train_judge.py domain`). A set's distance is the mean of its answers'.
The same file holds what that distance predicted on held-out groups (a model family or question set left out
of training, read against the centroids of the rest): monotone maps from a group's distance to the judge's
false-positive rate and AUC there, and `validated`, the distance up to which held-out model families answering
known question sets lie (90th percentile), the setting of the judge's documented figures; and `weights`, the
digest of the judge's weights it belongs to.
"""

from dataclasses import dataclass
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from emprobe.errors import EmprobeError
from emprobe.judge import _cross, _embedder

REFERENCE = Path(str(files("emprobe.judge") / "builtin" / "domain.npz"))


class DomainCheck(BaseModel):
    """One condition's answers against the judge's training data, and the judge's held-out error that far out."""

    condition: str
    answers: int
    """How many answers were read (a seeded sample of the condition's)."""
    distance: float
    validated: float
    """Held-out model families on known question sets lie at up to this distance."""
    false_positive_rate: float
    """On held-out groups at this distance: the share of GPT-4o-aligned answers the judge called misaligned."""
    auc: float
    """On held-out groups at this distance: the AUC of P(misaligned) against GPT-4o's label."""
    measured: float
    """The farthest held-out group; beyond it the two figures are those of the farthest groups (a bound)."""

    @property
    def outside(self) -> bool:
        return self.distance > self.validated

    @property
    def beyond_measured(self) -> bool:
        return self.distance > self.measured


def embed_ids(model: Any, ids: list[list[int]]) -> np.ndarray:
    """(rows x hidden) unit-length mean-pooled states of token-id rows, read in batches of similar length."""
    import torch

    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for rows in _cross.length_batches([len(row) for row in ids]):
            tokens, mask = (torch.from_numpy(a) for a in _cross.padded([ids[i] for i in rows]))
            out[rows] = torch.nn.functional.normalize(_cross.pooled(model, tokens, mask), dim=-1).numpy()
    return out


def nearest_distance(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of each unit-length row to its nearest (unit-length) centroid."""
    return 1.0 - (embeddings @ centroids.astype(np.float32).T).max(axis=1)


@dataclass
class DomainReference:
    """The training data's centroids and the held-out error maps of `builtin/domain.npz`."""

    arrays: dict[str, np.ndarray]

    @classmethod
    def load(cls, path: Path = REFERENCE) -> "DomainReference":
        if not path.is_file():
            raise EmprobeError(f"built-in judge domain reference not found: {path} "
                               "(run scripts/train_judge.py domain)")
        with np.load(path) as npz:
            return cls(dict(npz))

    @cached_property
    def base(self) -> tuple[Any, Any]:
        tokenizer, model = _embedder.load_base()
        return tokenizer, _embedder.prepacked(model)

    def distances(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """Each (question, answer)'s distance to the nearest centroid of the training data."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        tokenizer, model = self.base
        ids = _cross.pair_ids(tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
        return nearest_distance(embed_ids(model, ids), self.arrays["centroids"])

    def describes(self, identity: str) -> bool:
        """Whether judgments of this identity come from the weights this reference was measured with."""
        return identity.startswith("builtin:") and f":{self.arrays['weights']}:" in identity

    def check(self, condition: str, distances: np.ndarray) -> DomainCheck:
        """A set of answers' mean distance, with the held-out error that the maps give at it."""
        distance = float(np.mean(distances))
        a = self.arrays
        return DomainCheck(condition=condition, answers=len(distances), distance=round(distance, 4),
                           validated=round(float(a["validated"]), 4), measured=round(float(a["fpr_x"].max()), 4),
                           false_positive_rate=float(np.interp(distance, a["fpr_x"], a["fpr_y"])),
                           auc=float(np.interp(distance, a["auc_x"], a["auc_y"])))
