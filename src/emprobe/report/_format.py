"""How numbers read in tables and pages: percentages, signed points, p-values; a dash for nothing."""

NONE = "\u2014"


def pct(value: float | None, digits: int = 2) -> str:
    return NONE if value is None else f"{value * 100:.{digits}f}%"


def signed_pct(value: float | None) -> str:
    return NONE if value is None else f"{value * 100:+.2f}"


def p_value(value: float | None) -> str:
    if value is None:
        return NONE
    return "<1e-4" if value < 1e-4 else f"{value:.3g}" if value < 0.01 else f"{value:.3f}"
