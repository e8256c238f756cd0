"""Whether a run's answers lie where the built-in judge was validated (see `emprobe.judge.DomainReference`)."""

import hashlib
from collections import defaultdict

from emprobe.judge import DomainCheck, DomainReference
from emprobe.rules import OVERALL
from emprobe.store import Store

PER_RUN = 4096
"""About this many answers at most are read per run, spread evenly over its conditions..."""
PER_CONDITION = (64, 256)
"""...but never fewer than the first or more than the second per condition."""


def sample_rank(sample_id: str) -> str:
    """The seeded order answers are read in: a sample id's hash, so the same answers are read every time."""
    return hashlib.sha256(f"domain|{sample_id}".encode()).hexdigest()


def domain_checks(db: Store, run_id: str, judge: str | None, identities: list[str],
                  reference: DomainReference | None = None) -> list[DomainCheck]:
    """Per condition and for the whole run, its answers against the built-in judge's training data; empty unless
    every judgment of `judge` came from the weights the shipped domain reference describes."""
    reference = reference or DomainReference.load()
    if judge is None or not identities or not all(reference.describes(i) for i in identities):
        return []
    configured = [c.get("name") for c in db.run(run_id).config.get("conditions", [])]
    low, high = PER_CONDITION
    take = min(high, max(low, PER_RUN // max(len(configured), 1)))
    by_condition: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for row in db.samples(run_id, judge):  # streamed; each condition keeps its `take` lowest ranks
        if row.answer and row.question is not None and row.generation_error is None:
            kept = by_condition[row.condition]
            kept.append((sample_rank(row.sample_id), row.question, row.answer))
            if len(kept) >= 2 * take:
                kept.sort()
                del kept[take:]
    if not by_condition:
        return []
    order = sorted(by_condition, key=lambda c: (configured.index(c) if c in configured else len(configured), c))
    chosen = {c: sorted(by_condition[c])[:take] for c in order}
    pairs = [(q, a) for rows in chosen.values() for _, q, a in rows]
    distances = reference.distances(pairs)
    out, start = [], 0
    for condition, rows in chosen.items():
        out.append(reference.check(condition, distances[start:start + len(rows)]))
        start += len(rows)
    if len(out) > 1:
        out.append(reference.check(OVERALL, distances))
    return out
