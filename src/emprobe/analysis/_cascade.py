"""A cascade run's misaligned rate from the store: the screen's P(misaligned) puts each answer in a stratum (screened
in, each band, the rest), the confirming judge's calls on the answers the cascade picked are weighted by their inverse
sampling probability."""

from pydantic import BaseModel

from emprobe.config import Cascade
from emprobe.rules import ALIGNED, COHERENT, OVERALL, Thresholds
from emprobe.stats import CascadeRate, Stratum, cascade_rate
from emprobe.store import Store


class CascadeRow(BaseModel):
    """One condition (or `(all)`): its strata (`Cascade.stratum`'s order) and the rate estimated from them."""

    condition: str
    strata: list[Stratum]
    """Per condition: screened in, each band from the highest, the rest (`(all)` holds every condition's)."""
    estimate: CascadeRate
    pending: int
    """Answers the cascade picked that the confirming judge has not judged yet."""
    screened_in: int
    audited: int
    """Answers below the screening threshold (in a band or the rest) the confirming judge judged."""


class CascadeSummary(BaseModel):
    cascade: Cascade
    totals: dict[str, CascadeRow]
    overall: CascadeRow


def summarize_cascade(store: Store, run_id: str, cascade: Cascade, thresholds: Thresholds) -> CascadeSummary:
    """Count, per condition and stratum, the screened answers and the confirming judge's calls on the picked ones.

    An answer belongs to the cascade once the screen judged it; answers the screen has not judged yet, and failed
    generations, are left out. Confirmations the cascade did not pick (another command's) are not counted.
    """
    screened = store.misaligned_probabilities(run_id, cascade.screen)
    counts: dict[str, list[list[int]]] = {}
    strata = len(cascade.fractions)
    pending: dict[str, int] = {}
    for sample in store.samples(run_id, cascade.confirm, texts=False):
        if sample.sample_id not in screened:
            continue
        p = screened[sample.sample_id]
        stratum = counts.setdefault(sample.condition, [[0] * 4 for _ in range(strata)])[cascade.stratum(p)]
        stratum[0] += 1
        if not cascade.confirms(sample.sample_id, p):
            continue
        if not sample.scores:
            pending[sample.condition] = pending.get(sample.condition, 0) + 1
            continue
        aligned, coherent = sample.score(ALIGNED), sample.score(COHERENT)
        stratum[1] += 1
        if aligned is not None and coherent is not None:
            stratum[2] += 1
            stratum[3] += thresholds.misaligned(aligned, coherent)
    totals = {c: _row(c, [_stratum(h) for h in counts[c]], pending.get(c, 0), strata) for c in sorted(counts)}
    overall = _row(OVERALL, [h for row in totals.values() for h in row.strata], sum(pending.values()), strata)
    return CascadeSummary(cascade=cascade, totals=totals, overall=overall)


def _stratum(counts: list[int]) -> Stratum:
    answers, confirmed, scored, misaligned = counts
    return Stratum(answers=answers, confirmed=confirmed, scored=scored, misaligned=misaligned)


def _row(condition: str, strata: list[Stratum], pending: int, per_condition: int) -> CascadeRow:
    """A row of conditions' strata, `per_condition` each, the screened-in one first."""
    return CascadeRow(condition=condition, strata=strata, estimate=cascade_rate(strata), pending=pending,
                      screened_in=sum(h.answers for h in strata[::per_condition]),
                      audited=sum(h.confirmed for i, h in enumerate(strata) if i % per_condition))
