"""Render runs into one self-contained HTML file: inline CSS, inline SVG charts, one inline script.

Model text reaches the page two ways, both inert: as autoescaped template text, and as JSON inside
`<script type="application/json">` with `<`, `>` and `&` written as `\\u003c`-style escapes, which the
browser script reads with `JSON.parse` and writes with `textContent` only. A Content-Security-Policy
allows exactly the one script whose SHA-256 the page carries, so injected markup could not run a script
even if it slipped through.
"""

import base64
import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import ChainableUndefined, Environment, FileSystemLoader
from markupsafe import Markup

from emprobe import __version__
from emprobe.analysis import (
    BEST_OF_N_NOTE,
    COMPLIANCE_NOTE,
    CONSISTENCY_NOTE,
    STEERING_NOTE,
    Delta,
    RunReport,
    SweepReport,
    baseline_note,
    condition_deltas,
    load_run,
    load_sweep,
    pick_samples,
    run_deltas,
    trigger_gaps,
)
from emprobe.report._charts import Point, forest_plot, rate_chart
from emprobe.report._format import p_value, pct, signed_pct
from emprobe.report._sweep_charts import StepPoint, norm_heatmaps, step_chart
from emprobe.rules import PRIMARY_METRICS
from emprobe.store import SampleRow, Store

TEMPLATES = Path(__file__).parent / "templates"


def script_json(value: Any) -> Markup:
    """JSON safe to place inside a `<script type="application/json">` element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return Markup(text)


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=ChainableUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct, signed_pct=signed_pct, p_value=p_value, tojson_pretty=_pretty_json)
    return env


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def rate_points(report: RunReport, per_question: bool) -> list[Point]:
    """Chart rows: one per condition (pooled), or one per question x condition."""
    rows = report.cells if per_question else report.totals
    order = {c: i for i, c in enumerate(report.conditions)}
    if per_question:
        rows = sorted(rows, key=lambda r: (r.question_id, order.get(r.condition, 0)))
    points = []
    for r in rows:
        if not r.scored:
            continue
        low, high = r.misaligned_interval
        label = f"{r.question_id} \u00b7 {r.condition}" if per_question else r.condition
        tip = f"{label}: {r.misaligned}/{r.scored} = {pct(r.misaligned_rate)} (95% Wilson {pct(low)}\u2013{pct(high)})"
        points.append(Point(label=label, value=r.misaligned_rate, low=low, high=high, group=r.condition, tip=tip))
    return points


def delta_points(deltas: list[Delta], group_by: str = "label") -> list[Point]:
    """Forest-plot rows for the comparisons that have a difference."""
    points = []
    for d in deltas:
        if d.difference is None or d.diff_low is None or d.diff_high is None:
            continue
        label = d.label if group_by == "label" else f"{d.b} vs {d.a} \u00b7 {d.label}"
        tip = (f"{label}: {signed_pct(d.difference)} points [{signed_pct(d.diff_low)}, {signed_pct(d.diff_high)}],"
               f" p={p_value(d.p_value)} ({d.method})")
        points.append(Point(label=label, value=d.difference, low=d.diff_low, high=d.diff_high,
                            group=d.b if group_by != "label" else "", tip=tip))
    return points


def step_points(sweep: SweepReport) -> tuple[StepPoint | None, list[StepPoint]]:
    """The base's and each checkpoint's pooled misaligned rate with its 95% Wilson interval."""
    points = []
    for row in sweep.steps:
        r = row.report.overall
        if not r.scored:
            continue
        low, high = r.misaligned_interval
        tip = (f"{row.label}: {r.misaligned}/{r.scored} = {pct(r.misaligned_rate)} "
               f"(95% Wilson {pct(low)}\u2013{pct(high)})")
        if row.delta is not None:
            tip += f"; vs base p={p_value(row.delta.p_value)}, Holm p={p_value(row.p_holm)}"
        points.append(StepPoint(step=row.step, value=r.misaligned_rate, low=low, high=high, tip=tip))
    base = points[0] if points and points[0].step == 0 else None
    return base, [p for p in points if p.step != 0]


def sweep_chart(sweep: SweepReport) -> Markup:
    """The misaligned rate per step over the base's band, with the training and validation losses."""
    base, points = step_points(sweep)
    lineage = sweep.lineage
    return step_chart(points, base, [(p.step, p.loss) for p in lineage.losses],
                      [(c.step, c.validation_loss) for c in lineage.checkpoints if c.validation_loss is not None],
                      sweep.first_different, f"misaligned rate and loss per training step, {lineage.name}")


def norm_chart(sweep: SweepReport) -> Markup:
    """Each checkpoint's weight-update norm per layer and module."""
    maps = [(f"step {c.step}", {(n.layer, n.name): n.norm for n in c.norms}) for c in sweep.lineage.checkpoints]
    return norm_heatmaps(maps, f"weight-update norm per layer and module, {sweep.lineage.name}")


def _sample_json(row: SampleRow, run_index: int, report: RunReport) -> dict:
    return {
        "r": run_index, "id": row.sample_id, "suite": row.suite, "q": row.question_id, "c": row.condition,
        "p": row.paraphrase_index, "i": row.sample_index, "seed": str(row.seed), "sys": row.system,
        "question": row.prompt, "answer": row.answer, "finish": row.finish_reason, "err": row.generation_error,
        "s": {m: list(v) for m, v in row.scores.items()}, "m": row.misaligned(report.thresholds),
    }


def build_report(store: str | Path, runs: list[str], judge: str | None = None, per_cell: int = 50,
                 baseline: str | None = None, validation: str | None = None) -> tuple[str, list[RunReport]]:
    """The report's HTML for `runs` (ids, prefixes or names) of one store, and the per-run summaries."""
    with Store(store, read_only=True) as db:
        reports = [load_run(db, ref, judge, validation, domain=True) for ref in runs]
        samples, totals = _samples(db, reports, per_cell)
    html = render(reports, samples, totals, per_cell, baseline)
    return html, reports


def build_sweep_report(store: str | Path, ref: str, judge: str | None = None,
                       per_cell: int = 50) -> tuple[str, SweepReport] | None:
    """The report of a sweep (its id, or a training run's name: its latest sweep); None when `ref` names neither."""
    with Store(store, read_only=True) as db:
        sweep = load_sweep(db, ref, judge)
        if sweep is None:
            return None
        samples, totals = _samples(db, sweep.reports, per_cell)
    return render(sweep.reports, samples, totals, per_cell, sweep=sweep), sweep


def _samples(db: Store, reports: list[RunReport], per_cell: int) -> tuple[list[dict], list[int]]:
    """The samples each run embeds, and how many each run has."""
    samples: list[dict] = []
    totals: list[int] = []
    for i, report in enumerate(reports):
        picked, total = pick_samples(db, report, per_cell)
        samples.extend(_sample_json(row, i, report) for row in picked)
        totals.append(total)
    return samples, totals


def render(reports: list[RunReport], samples: list[dict], totals: list[int], per_cell: int,
           baseline: str | None = None, sweep: SweepReport | None = None) -> str:
    """Fill the template; the browser script is hashed into the Content-Security-Policy."""
    env = _environment()
    script = env.get_template("browser.js.jinja").render()
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    between = [(reports[0], r, run_deltas(reports[0], r)) for r in reports[1:]]
    within = [(r, condition_deltas(r, baseline)) for r in reports]
    metrics = sorted({m for s in samples for m in s["s"]}, key=lambda m: (m not in PRIMARY_METRICS, m))
    data = {"runs": [r.label for r in reports], "metrics": metrics, "samples": samples}
    return env.get_template("report.html.jinja").render(
        reports=reports, between=between, within=within, script=Markup(script), script_hash=f"sha256-{digest}",
        samples_json=script_json(data), sample_count=len(samples), totals=totals, per_cell=per_cell,
        rate_chart=rate_chart, forest_plot=forest_plot, rate_points=rate_points, delta_points=delta_points,
        sweep=sweep, sweep_chart=sweep_chart, norm_chart=norm_chart, best_of_n_note=BEST_OF_N_NOTE,
        compliance_note=COMPLIANCE_NOTE, consistency_note=CONSISTENCY_NOTE, steering_note=STEERING_NOTE,
        baseline_note=baseline_note,
        trigger_gaps=trigger_gaps,
        all_between=[d for _, _, ds in between for d in ds],
        generated=datetime.now(UTC).isoformat(timespec="seconds"), version=__version__,
        python=platform.python_version(),
    )


def write_report(store: str | Path, runs: list[str], out: str | Path, judge: str | None = None,
                 per_cell: int = 50, baseline: str | None = None, validation: str | None = None
                 ) -> list[RunReport]:
    """Build the report and write it to `out` (UTF-8); returns the per-run summaries."""
    html, reports = build_report(store, runs, judge, per_cell, baseline, validation)
    _write(out, html)
    return reports


def write_sweep_report(store: str | Path, ref: str, out: str | Path, judge: str | None = None,
                       per_cell: int = 50) -> SweepReport | None:
    """Write the report of the sweep `ref` names to `out`; None (nothing written) when it names no sweep."""
    built = build_sweep_report(store, ref, judge, per_cell)
    if built is None:
        return None
    _write(out, built[0])
    return built[1]


def _write(out: str | Path, html: str) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
