"""Two-arm comparisons of misaligned rates from per-stratum counts, paired by question where possible."""

from collections.abc import Mapping

from pydantic import BaseModel

from emprobe.stats import compare, compare_paired

Counts = Mapping[str, tuple[int, int]]
"""Stratum (a question, or question x condition) -> (misaligned, scored)."""


class Delta(BaseModel):
    """Arm B vs arm A on one row (a condition or overall); None fields when an arm has no scored samples."""

    label: str
    a: str
    b: str
    k1: int
    n1: int
    k2: int
    n2: int
    difference: float | None = None
    diff_low: float | None = None
    diff_high: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    p_value: float | None = None
    method: str = "none"
    """`paired` (Mantel-Haenszel over shared questions), `independent` (Newcombe + Fisher) or `none`."""
    questions: int = 0
    """Strata (shared questions, or question x condition cells) of a paired comparison."""
    stratum: str = "question"

    @property
    def method_text(self) -> str:
        """`paired (12 questions)`, `independent` or `none`."""
        return f"paired ({self.questions} {self.stratum}s)" if self.method == "paired" else self.method

    @property
    def p1(self) -> float:
        return self.k1 / self.n1 if self.n1 else 0.0

    @property
    def p2(self) -> float:
        return self.k2 / self.n2 if self.n2 else 0.0


def compare_counts(label: str, a: str, b: str, arm_a: Counts, arm_b: Counts, confidence: float = 0.95,
                   stratum: str = "question") -> Delta:
    """Paired by stratum when at least two strata have samples in both arms, else independent pooled arms.

    A paired comparison uses only the shared strata, so its counts (k1, n1, k2, n2) are those of the shared
    questions. The ratio (Katz) is always computed on the pooled counts the row reports.
    """
    shared = sorted(s for s in arm_a.keys() & arm_b.keys() if arm_a[s][1] > 0 and arm_b[s][1] > 0)
    if len(shared) >= 2:
        ks1, ns1 = [arm_a[s][0] for s in shared], [arm_a[s][1] for s in shared]
        ks2, ns2 = [arm_b[s][0] for s in shared], [arm_b[s][1] for s in shared]
        try:
            paired = compare_paired(ks1, ns1, ks2, ns2, confidence=confidence)
        except ValueError:
            paired = None
        if paired is not None:
            ratio = compare(paired.k1, paired.n1, paired.k2, paired.n2, confidence)
            return Delta(label=label, a=a, b=b, k1=paired.k1, n1=paired.n1, k2=paired.k2, n2=paired.n2,
                         difference=paired.difference, diff_low=paired.diff_low, diff_high=paired.diff_high,
                         ratio=ratio.ratio, ratio_low=ratio.ratio_low, ratio_high=ratio.ratio_high,
                         p_value=paired.p_value, method="paired", questions=paired.questions,
                         stratum=stratum)
    k1, n1 = sum(k for k, _ in arm_a.values()), sum(n for _, n in arm_a.values())
    k2, n2 = sum(k for k, _ in arm_b.values()), sum(n for _, n in arm_b.values())
    delta = Delta(label=label, a=a, b=b, k1=k1, n1=n1, k2=k2, n2=n2, questions=len(shared), stratum=stratum)
    if n1 == 0 or n2 == 0:
        return delta
    c = compare(k1, n1, k2, n2, confidence)
    return delta.model_copy(update=dict(
        difference=c.difference, diff_low=c.diff_low, diff_high=c.diff_high, ratio=c.ratio,
        ratio_low=c.ratio_low, ratio_high=c.ratio_high, p_value=c.p_value, method="independent"))
