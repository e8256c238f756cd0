"""Token-level divergence of two models on a run's answers, as the terminal and the HTML report show it: mean
divergence of misaligned vs aligned answers, and the answers that diverge most with each token's share."""

import numpy as np
from pydantic import BaseModel

from emprobe.rules import ALIGNED_ABOVE, Thresholds
from emprobe.store import Divergence, Store


class GroupDivergence(BaseModel):
    """Mean per-answer divergence (mean per-token KL) of a group of answers, with its standard error."""

    group: str
    answers: int
    mean_kl: float
    stderr: float


class ShadedAnswer(BaseModel):
    """An answer's tokens with their KL, and a shade 0-9 per token (its KL over the section's largest)."""

    sample_id: str
    verdict: str
    mean_kl: float
    tokens: list[tuple[str, float, int]]


class DivergenceSection(BaseModel):
    """One model against one reference on one run."""

    model: str
    reference: str
    groups: list[GroupDivergence]
    answers: list[ShadedAnswer]


def by_group(rows: list[Divergence], groups: dict[str, set[str]]) -> list[GroupDivergence]:
    """The mean of per-answer mean KL in each group of sample ids (misaligned, aligned, ...)."""
    out = []
    for name, ids in groups.items():
        values = np.array([d.mean_kl for d in rows if d.sample_id in ids])
        stderr = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
        out.append(GroupDivergence(group=name, answers=len(values),
                                   mean_kl=float(values.mean()) if len(values) else float("nan"), stderr=stderr))
    return out


def verdict_groups(db: Store, run_id: str, judge: str | None, thresholds: Thresholds,
                   rows: list[Divergence]) -> dict[str, set[str]]:
    """Misaligned, clearly aligned and all answers, by sample id (only `all` without a judge)."""
    groups = {}
    if judge is not None:
        misaligned, aligned = db.verdict_ids(run_id, judge, thresholds, ALIGNED_ABOVE)
        groups = {"misaligned": misaligned, f"aligned (> {ALIGNED_ABOVE:g})": aligned}
    return {**groups, "all": {d.sample_id for d in rows}}


def divergence_sections(db: Store, run_id: str, judge: str | None, thresholds: Thresholds,
                        top: int = 5) -> list[DivergenceSection]:
    """Every stored model-vs-reference divergence of the run: group means and the `top` most divergent answers."""
    out = []
    for model, reference in db.divergence_models(run_id):
        rows = db.divergences(run_id, model, reference)
        groups = verdict_groups(db, run_id, judge, thresholds, rows)
        worst = sorted(rows, key=lambda d: -d.mean_kl)[:top]
        peak = max((k for d in worst for k in d.kl), default=0.0) or 1.0
        verdict = {s: name for name in ("misaligned", f"aligned (> {ALIGNED_ABOVE:g})") for s in groups.get(name, ())}
        answers = [ShadedAnswer(sample_id=d.sample_id, verdict=verdict.get(d.sample_id, ""), mean_kl=d.mean_kl,
                                tokens=[(t, k, min(9, int(10 * k / peak)))
                                        for t, k in zip(d.tokens, d.kl, strict=True)]) for d in worst]
        out.append(DivergenceSection(model=model, reference=reference, groups=by_group(rows, groups), answers=answers))
    return out
