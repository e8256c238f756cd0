"""The HTML report: numbers match the summary, model text is inert, and the page renders in Chromium."""

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emprobe.analysis import condition_deltas, load_run
from emprobe.report import build_report, script_json
from emprobe.stats import wilson
from emprobe.store import Store
from store_factory import PAYLOADS, make_store


@pytest.fixture
def store(tmp_path) -> Path:
    path = make_store(tmp_path / "store.db")
    make_store(path, run_id="run-b", name="tuned", misaligned={"free": 4, "json": 6})
    return path


def test_numbers_match_the_summary(store):
    with Store(store, read_only=True) as db:
        report = load_run(db, "base")
    free = next(t for t in report.totals if t.condition == "free")
    # free: 3 questions x 8 samples, 1 generation failure, 1 judge failure, 1 REFUSAL; 1 misaligned per question
    assert (free.planned, free.scored, free.misaligned) == (24, 21, 3)
    assert (free.generation_failures, free.judge_failures, free.labelled) == (1, 1, 1)
    assert free.misaligned_interval == wilson(3, 21)
    assert report.overall.scored == 21 + 24 and report.overall.misaligned == 3 + 9
    assert report.conditions == ["free", "json"]
    [delta] = condition_deltas(report)
    assert delta.method == "paired" and delta.questions == 3 and (delta.k1, delta.k2) == (3, 9)


def test_html_escapes_model_text_and_carries_a_csp(store):
    html, reports = build_report(store, ["base", "tuned"])
    assert len(reports) == 2
    for payload in PAYLOADS:
        assert payload not in html
    assert "window.__pwned" in html  # present, but only in escaped or JSON-escaped form
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="application/json" id="emprobe-samples">', "<script>"]
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html  # the judge error message, as text
    assert "<b>helpful</b>" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in html
    data = re.search(r'id="emprobe-samples">(.*?)</script>', html, re.S).group(1)
    assert "<" not in data and ">" not in data
    samples = json.loads(data)["samples"]
    assert {s["answer"] for s in samples} >= set(PAYLOADS)
    assert samples[0]["m"] is True  # most misaligned first


def test_script_json_round_trips():
    value = {"a": "</script><!-- & \u2028 >"}
    text = str(script_json(value))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_report_command_writes_one_file(store, tmp_path):
    from emprobe.cli import app

    out = tmp_path / "sub" / "report.html"
    result = CliRunner().invoke(app, ["report", "base", "tuned", "--store", str(store), "-o", str(out)],
                                env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.count('class="chart forest"') == 3  # runs, and conditions within each run
    assert "misaligned" in result.output and "json vs free" in result.output and "judge failures" in result.output
    missing = CliRunner().invoke(app, ["report", "nope", "--store", str(store), "-o", str(out)])
    assert missing.exit_code != 0


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    pytest.importorskip("playwright", reason="the playwright Python package drives chromium (pip install playwright)")
    return path


def test_report_in_headless_chromium(store, tmp_path):
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report.html"
    html, _ = build_report(store, ["base", "tuned"], per_cell=0)
    out.write_text(html, encoding="utf-8")
    errors, requests = [], []
    flags = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=flags)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri(), wait_until="load")
            page.wait_for_selector("#sample-list article")
            assert page.evaluate("typeof window.__pwned") == "undefined"
            text = page.inner_text("body")
            for payload in PAYLOADS:
                assert payload in text
            assert "</div></td></tr></table><b>broken" in page.inner_text("#sample-list")
            assert page.evaluate("document.querySelectorAll('svg rect').length") > 0
            assert page.evaluate("document.querySelectorAll('svg.forest').length") == 3
            assert page.evaluate("document.querySelectorAll('#sample-list img, #sample-list b').length") == 0
            page.select_option("#f-condition", "json")
            page.check("#f-misaligned")
            shown = page.inner_text("#sample-status")
            assert shown.startswith("showing 27 of 27 matching")  # base: 3 x 3, tuned: 3 x 6
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert all(url.startswith("file://") for url in requests)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
