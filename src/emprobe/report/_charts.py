"""Charts as inline SVG built in Python: interval bars for rates and forest plots for differences.

Every piece of text that reaches the SVG (labels, tooltips) goes through `html.escape`; the results are
`Markup`, so the template inserts them without escaping twice.
"""

import math
from collections.abc import Callable
from html import escape

from markupsafe import Markup
from pydantic import BaseModel

PALETTE = ("#3366cc", "#dc7633", "#2e9e5b", "#a03cb4", "#b8860b", "#17a2b8", "#c0392b", "#7f8c8d")
ROW, TOP, BOTTOM, PLOT_W, GAP = 22, 8, 34, 440, 12


class Point(BaseModel):
    """One row of a chart: a value with its interval; `group` picks the colour, `tip` is the hover text."""

    label: str
    value: float
    low: float
    high: float
    group: str = ""
    tip: str = ""


def colors(groups: list[str]) -> dict[str, str]:
    """A stable colour per group, in order of first appearance."""
    out: dict[str, str] = {}
    for g in groups:
        out.setdefault(g, PALETTE[len(out) % len(PALETTE)])
    return out


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick positions covering [lo, hi]."""
    span = hi - lo if hi > lo else 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def _pct(v: float) -> str:
    return f"{v * 100:.3g}%"


def _label_width(points: list[Point]) -> int:
    return min(300, max(60, 7 * max((len(p.label) for p in points), default=0) + 10))


def _frame(
    points: list[Point], lo: float, hi: float, kind: str, aria: str
) -> tuple[list[str], Callable[[float], float], int]:
    """The SVG head, axis and grid; returns the parts, the x mapping and the label width."""
    ticks = nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    left = _label_width(points)
    width, height = left + GAP + PLOT_W + 20, TOP + ROW * len(points) + BOTTOM

    def x(v: float) -> float:
        return round(left + GAP + (v - lo) / (hi - lo) * PLOT_W, 2)

    axis_y = TOP + ROW * len(points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" role="img" aria-label="{escape(aria)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<line class="axis" x1="{x(lo)}" y1="{axis_y}" x2="{x(hi)}" y2="{axis_y}" stroke="#555"/>',
    ]
    for t in ticks:
        parts.append(f'<line class="grid" x1="{x(t)}" y1="{TOP}" x2="{x(t)}" y2="{axis_y}" stroke="#e3e3e3"/>')
        parts.append(f'<text x="{x(t)}" y="{axis_y + 14}" text-anchor="middle" font-size="11">{escape(_pct(t))}</text>')
    return parts, x, left


def _rows(points: list[Point], left: int, parts: list[str]):
    """Per point: its row's y, colour and escaped tooltip, after appending the row's label to `parts`."""
    palette = colors([p.group for p in points])
    for i, p in enumerate(points):
        y = TOP + ROW * i + ROW / 2
        parts.append(_label(y, left, p.label))
        yield p, y, palette[p.group], escape(p.tip or f"{p.label}: {_pct(p.value)} [{_pct(p.low)}, {_pct(p.high)}]")


def _label(y: float, left: int, text: str) -> str:
    shown = text if len(text) <= 42 else text[:40] + "\u2026"
    return (f'<text x="{left}" y="{y + 4}" text-anchor="end" font-size="12"><title>{escape(text)}</title>'
            f"{escape(shown)}</text>")


def rate_chart(points: list[Point], aria: str) -> Markup:
    """Horizontal bars for rates in [0, 1] with their confidence intervals as whiskers."""
    if not points:
        return Markup('<p class="empty">No scored samples.</p>')
    hi = max(0.01, max(p.high for p in points))
    parts, x, left = _frame(points, 0.0, min(1.0, hi * 1.05), "rates", aria)
    for p, y, color, tip in _rows(points, left, parts):
        parts.append(f'<g class="row"><title>{tip}</title>'
                     f'<rect class="bar" x="{x(0)}" y="{y - 6}" width="{max(0.0, x(p.value) - x(0))}" height="12" '
                     f'fill="{color}" fill-opacity="0.35"/>'
                     f'<line class="ci" x1="{x(p.low)}" y1="{y}" x2="{x(p.high)}" y2="{y}" stroke="{color}" '
                     f'stroke-width="2"/>'
                     f'<line x1="{x(p.low)}" y1="{y - 4}" x2="{x(p.low)}" y2="{y + 4}" stroke="{color}"/>'
                     f'<line x1="{x(p.high)}" y1="{y - 4}" x2="{x(p.high)}" y2="{y + 4}" stroke="{color}"/>'
                     f'<circle cx="{x(p.value)}" cy="{y}" r="3.5" fill="{color}"/></g>')
    parts.append("</svg>")
    return Markup("".join(parts))


def forest_plot(points: list[Point], aria: str) -> Markup:
    """Differences with intervals around a vertical line at zero (a forest plot)."""
    if not points:
        return Markup('<p class="empty">Nothing to compare.</p>')
    reach = max(0.005, max(max(abs(p.low), abs(p.high)) for p in points) * 1.05)
    parts, x, left = _frame(points, -reach, reach, "forest", aria)
    axis_y = TOP + ROW * len(points)
    parts.append(f'<line class="zero" x1="{x(0)}" y1="{TOP}" x2="{x(0)}" y2="{axis_y}" stroke="#222" '
                 f'stroke-dasharray="3 3"/>')
    for p, y, color, tip in _rows(points, left, parts):
        parts.append(f'<g class="row"><title>{tip}</title>'
                     f'<line class="ci" x1="{x(p.low)}" y1="{y}" x2="{x(p.high)}" y2="{y}" stroke="{color}" '
                     f'stroke-width="2"/>'
                     f'<rect class="marker" x="{x(p.value) - 4}" y="{y - 4}" width="8" height="8" fill="{color}"/>'
                     f"</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
