"""Multiple comparisons: Holm's step-down adjustment, which controls the family-wise error rate."""

from collections.abc import Sequence


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest p times (m - i), made monotone, capped at 1.

    Rejecting every hypothesis whose adjusted p is below alpha keeps the chance of any false rejection at most
    alpha, whatever the dependence between the tests (Holm 1979); it is uniformly more powerful than Bonferroni.
    """
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-values lie in [0, 1], got {p}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
