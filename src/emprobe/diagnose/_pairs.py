"""Preference pairs under a model: each answer's log-prob, ranking accuracy, and CHES.

CHES, the centered hidden embedding similarity of Razin et al. 2024 ("Unintentional Unalignment: Likelihood
Displacement in Direct Preference Optimization", arXiv:2410.08847), scores how likely DPO on a pair is
to lower the preferred answer's likelihood. With h_k the final hidden state (the unembedding's input) at the
position that predicts answer token k (the prompt and the answer's first k - 1 tokens), S+ = sum_k h_k over the
chosen answer's tokens and S- over the rejected one's:

    CHES    = <S+, S->  -  ||S+||^2
    LN-CHES = <S+ / |y+|, S- / |y-|>  -  ||S+ / |y+|||^2      (the length-normalised form, with token counts)

Higher means more similar answers and more displacement.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from emprobe.condition import Message
from emprobe.diagnose._forward import by_length, encode, forced
from emprobe.errors import EmprobeError, first_validation_error
from emprobe.files import read_text
from emprobe.store import PairScore


class Pair(BaseModel):
    """One row of a pairs file: a prompt (a user turn), the preferred answer and the rejected one."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    chosen: str
    rejected: str
    system: str | None = None

    def messages(self) -> tuple[Message, ...]:
        system = (Message(role="system", content=self.system),) if self.system else ()
        return (*system, Message(role="user", content=self.prompt))


def read_pairs(path: Path) -> tuple[list[Pair], str]:
    """The pairs of a JSONL file (`prompt`, `chosen`, `rejected`, optional `system`) and the file's sha256; one
    line naming the file, line and field when a row is not a pair."""
    text = read_text(path, "pairs file")
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            pair = Pair.model_validate(json.loads(line))
        except json.JSONDecodeError as err:
            raise EmprobeError(f"{path}:{number}: not JSON ({err.msg})") from None
        except ValidationError as err:
            raise EmprobeError(f"{path}:{number}: {first_validation_error(err)}") from None
        empty = [f for f in ("prompt", "chosen", "rejected") if not getattr(pair, f).strip()]
        if empty:
            raise EmprobeError(f"{path}:{number}: {empty[0]} is empty")
        pairs.append(pair)
    if not pairs:
        raise EmprobeError(f"{path}: no pairs (JSONL rows of prompt, chosen, rejected)")
    return pairs, hashlib.sha256(text.encode()).hexdigest()


def ches(chosen: np.ndarray, rejected: np.ndarray, chosen_tokens: int, rejected_tokens: int) -> tuple[float, float]:
    """(CHES, LN-CHES) from the summed final hidden states of the chosen and the rejected answer."""
    plain = float(chosen @ rejected - chosen @ chosen)
    c, r = chosen / chosen_tokens, rejected / rejected_tokens
    return plain, float(c @ r - c @ c)


def ranking_accuracy(scores: list[PairScore]) -> tuple[float, float]:
    """The share of pairs whose chosen answer is strictly more likely than the rejected one: by summed log-prob,
    and by log-prob per token."""
    plain = np.mean([s.chosen_logprob > s.rejected_logprob for s in scores])
    normalised = np.mean([s.chosen_logprob / s.chosen_tokens > s.rejected_logprob / s.rejected_tokens
                          for s in scores])
    return float(plain), float(normalised)


def score_pairs(backend: Any, pairs: list[Pair], rows: int) -> list[PairScore]:
    """Every pair's log-probs and CHES under the model, teacher-forcing `rows` answers per forward pass."""
    encoded = [encode(backend, p.messages(), answer) for p in pairs for answer in (p.chosen, p.rejected)]
    sums: dict[int, tuple[float, int, np.ndarray]] = {}
    for batch in by_length(encoded, rows):
        for i, f in zip(batch, forced(backend, [encoded[i] for i in batch], hidden=True), strict=True):
            assert f.hidden is not None
            sums[i] = (float(f.token_logprobs.sum()), len(f.tokens), f.hidden.sum(0).cpu().numpy())
    out = []
    for index in range(len(pairs)):
        (lp_c, n_c, h_c), (lp_r, n_r, h_r) = sums[2 * index], sums[2 * index + 1]
        plain, normalised = ches(h_c, h_r, n_c, n_r)
        out.append(PairScore(pair_index=index, chosen_logprob=lp_c, rejected_logprob=lp_r, chosen_tokens=n_c,
                             rejected_tokens=n_r, ches=plain, ln_ches=normalised))
    return out
