"""Inline SVG for a checkpoint sweep: misaligned rate per training step with intervals and the losses on a second
axis, and heatmaps of the weight-update norms per layer and module.

As in `_charts`, every text that reaches the SVG goes through `html.escape` and the results are `Markup`.
"""

from collections.abc import Sequence
from html import escape

from markupsafe import Markup
from pydantic import BaseModel

from emprobe.report._charts import PALETTE, nice_ticks

W, H, LEFT, RIGHT, TOP, BOTTOM = 720, 300, 64, 64, 34, 40
RATE, TRAIN, VALID, BASE, MARK = PALETTE[0], PALETTE[1], PALETTE[2], "#999", PALETTE[6]
CELL_W, CELL_H, MAX_MAPS = 14, 10, 12


class StepPoint(BaseModel):
    """A checkpoint's misaligned rate and 95% interval at its step, with its hover text."""

    step: int
    value: float
    low: float
    high: float
    tip: str


def _fmt(v: float, percent: bool) -> str:
    return f"{v * 100:.3g}%" if percent else f"{v:.3g}"


def step_chart(points: Sequence[StepPoint], base: StepPoint | None, train_loss: Sequence[tuple[int, float]],
               val_loss: Sequence[tuple[int, float]], first: int | None, aria: str) -> Markup:
    """Rate per step (points, whiskers, a line) over the base's band, losses on the right axis, the first
    differing step marked."""
    steps = [p.step for p in points] + [s for s, _ in train_loss] + [0]
    if not points and base is None and not train_loss and not val_loss:
        return Markup('<p class="empty">No scored samples and no losses.</p>')
    xs = nice_ticks(0, max(max(steps), 1))
    top_rate = max([0.01, *(p.high for p in points), *([base.high] if base else [])]) * 1.05
    ys = nice_ticks(0, min(1.0, top_rate))
    losses = [v for _, v in train_loss] + [v for _, v in val_loss]
    ls = nice_ticks(0, max(losses) * 1.05) if losses else []
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(step: float) -> float:
        return round(LEFT + step / xs[-1] * plot_w, 2)

    def y(rate: float) -> float:
        return round(TOP + plot_h - rate / ys[-1] * plot_h, 2)

    def yl(loss: float) -> float:
        return round(TOP + plot_h - loss / ls[-1] * plot_h, 2)

    bottom = TOP + plot_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart steps" role="img" aria-label="{escape(aria)}" '
             f'width="{W}" height="{H}" viewBox="0 0 {W} {H}">']
    for t in ys:
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(t)}" x2="{LEFT + plot_w}" y2="{y(t)}" stroke="#e3e3e3"/>'
                     f'<text x="{LEFT - 6}" y="{y(t) + 4}" text-anchor="end" font-size="11">{_fmt(t, True)}</text>')
    for t in xs:
        parts.append(f'<text x="{x(t)}" y="{bottom + 14}" text-anchor="middle" font-size="11">{t:g}</text>')
    for t in ls:
        parts.append(f'<text x="{LEFT + plot_w + 6}" y="{yl(t) + 4}" font-size="11" fill="{TRAIN}">{_fmt(t, False)}'
                     "</text>")
    parts.append(f'<line class="axis" x1="{LEFT}" y1="{bottom}" x2="{LEFT + plot_w}" y2="{bottom}" stroke="#555"/>'
                 f'<text x="{LEFT + plot_w / 2}" y="{H - 6}" text-anchor="middle" font-size="12">training step</text>'
                 f'<text x="14" y="{TOP + plot_h / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {TOP + plot_h / 2})">misaligned rate (95% CI)</text>'
                 f'<text x="{W - 12}" y="{TOP + plot_h / 2}" text-anchor="middle" font-size="12" fill="{TRAIN}" '
                 f'transform="rotate(90 {W - 12} {TOP + plot_h / 2})">loss</text>')
    if base is not None:
        band = max(0.5, y(base.low) - y(base.high))
        parts.append(f'<g class="base"><title>{escape(base.tip)}</title>'
                     f'<rect x="{LEFT}" y="{y(base.high)}" width="{plot_w}" height="{band}"'
                     f' fill="{BASE}" fill-opacity="0.18"/><line x1="{LEFT}" y1="{y(base.value)}" x2="{LEFT + plot_w}" '
                     f'y2="{y(base.value)}" stroke="{BASE}" stroke-dasharray="4 3"/></g>')
    if first is not None:
        parts.append(f'<g class="first-different"><line x1="{x(first)}" y1="{TOP}" x2="{x(first)}" y2="{bottom}" '
                     f'stroke="{MARK}" stroke-width="1.5" stroke-dasharray="2 2"/><text x="{x(first) + 4}" '
                     f'y="{TOP + 10}" font-size="11" fill="{MARK}">first differs from base: step {first}</text></g>')
    if train_loss:
        line = " ".join(f"{x(s)},{yl(v)}" for s, v in train_loss)
        parts.append(f'<polyline class="train-loss" points="{line}" fill="none" stroke="{TRAIN}" stroke-width="1.2" '
                     'stroke-opacity="0.8"/>')
    if val_loss:
        line = " ".join(f"{x(s)},{yl(v)}" for s, v in val_loss)
        parts.append(f'<polyline class="val-loss" points="{line}" fill="none" stroke="{VALID}" stroke-width="1.5" '
                     'stroke-dasharray="5 3"/>')
        parts.extend(f'<rect x="{x(s) - 3}" y="{yl(v) - 3}" width="6" height="6" fill="{VALID}">'
                     f'<title>{escape(f"step {s}: validation loss {v:.4f}")}</title></rect>' for s, v in val_loss)
    if points:
        line = " ".join(f"{x(p.step)},{y(p.value)}" for p in points)
        parts.append(f'<polyline class="rate" points="{line}" fill="none" stroke="{RATE}" stroke-width="2"/>')
    for p in points:
        parts.append(f'<g class="step"><title>{escape(p.tip)}</title>'
                     f'<line x1="{x(p.step)}" y1="{y(p.low)}" x2="{x(p.step)}" y2="{y(p.high)}" stroke="{RATE}"/>'
                     f'<circle cx="{x(p.step)}" cy="{y(p.value)}" r="4" fill="{RATE}"/></g>')
    legend = [("misaligned rate", RATE, ""), ("base (95% CI band)", BASE, "4 3"), ("training loss", TRAIN, ""),
              ("validation loss", VALID, "5 3")]
    for i, (text, color, dash) in enumerate(legend):
        lx = LEFT + i * 160
        parts.append(f'<line x1="{lx}" y1="12" x2="{lx + 18}" y2="12" stroke="{color}" stroke-width="2" '
                     f'stroke-dasharray="{dash}"/><text x="{lx + 22}" y="16" font-size="11">{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def norm_heatmaps(maps: Sequence[tuple[str, dict[tuple[int | None, str], float]]], aria: str) -> Markup:
    """One small heatmap per checkpoint (rows: layers, columns: modules) on one shared colour scale."""
    if not maps or not any(cells for _, cells in maps):
        return Markup('<p class="empty">No weight-update norms recorded.</p>')
    if len(maps) > MAX_MAPS:  # evenly spaced, the last kept
        every = -(-len(maps) // MAX_MAPS)
        maps = [m for i, m in enumerate(maps) if i % every == 0 or i == len(maps) - 1]
    keys = {k for _, cells in maps for k in cells}
    layers = sorted({layer for layer, _ in keys}, key=lambda v: (v is None, v if v is not None else 0))
    modules = sorted({module for _, module in keys})
    peak = max(v for _, cells in maps for v in cells.values()) or 1.0
    left, head = 44, 70
    block = len(modules) * CELL_W + 16
    width, height = left + block * len(maps), head + len(layers) * CELL_H + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart norms" role="img" aria-label="{escape(aria)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']
    for r, layer in enumerate(layers):
        if r % max(1, len(layers) // 15) == 0:
            parts.append(f'<text x="{left - 4}" y="{head + r * CELL_H + CELL_H - 1}" text-anchor="end" '
                         f'font-size="9">{escape("other" if layer is None else str(layer))}</text>')
    for i, (label, cells) in enumerate(maps):
        x0 = left + i * block
        parts.append(f'<text x="{x0}" y="12" font-size="11">{escape(label)}</text>')
        for c, module in enumerate(modules):
            cx = x0 + c * CELL_W + CELL_W / 2
            parts.append(f'<text x="{cx}" y="{head - 4}" font-size="9" transform="rotate(-60 {cx} {head - 4})">'
                         f"{escape(module)}</text>")
        for r, layer in enumerate(layers):
            for c, module in enumerate(modules):
                value = cells.get((layer, module))
                if value is None:
                    continue
                where = "outside the layers" if layer is None else f"layer {layer}"
                tip = f"{label} \u00b7 {where} \u00b7 {module}: update norm {value:.4g}"
                parts.append(f'<rect x="{x0 + c * CELL_W}" y="{head + r * CELL_H}" width="{CELL_W - 1}" '
                             f'height="{CELL_H - 1}" fill="{RATE}" fill-opacity="{0.06 + 0.94 * value / peak:.3f}">'
                             f"<title>{escape(tip)}</title></rect>")
    parts.append(f'<text x="{left}" y="{height - 6}" font-size="10">colour: update norm, darkest = '
                 f"{escape(f'{peak:.4g}')}; rows: layers</text></svg>")
    return Markup("".join(parts))
