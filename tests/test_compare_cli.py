"""`emprobe compare`: the printed numbers are emprobe.stats' own, paired by question where possible."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emprobe.analysis import load_run, run_deltas, summarize
from emprobe.cli import app
from emprobe.errors import EmprobeError
from emprobe.rules import Thresholds
from emprobe.stats import compare, compare_paired
from emprobe.store import Store
from store_factory import JUDGE, make_store


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "200"})


def _row(output: str, label: str) -> list[str]:
    line = next(line for line in output.splitlines() if re.match(rf"[│|]\s*{re.escape(label)}\s", line))
    return [cell.strip() for cell in re.split(r"[│|]", line)[1:-1]]


def _per_question(store: Path, run_id: str, condition: str) -> tuple[list[int], list[int]]:
    db = Store(store)
    rows = [r for r in summarize(db, run_id, JUDGE, Thresholds()).cells if r.condition == condition]
    db.close()
    rows.sort(key=lambda r: r.question_id)
    return [r.misaligned for r in rows], [r.scored for r in rows]


@pytest.fixture
def store(tmp_path) -> Path:
    path = make_store(tmp_path / "store.db")
    make_store(path, run_id="run-b", name="tuned", misaligned={"free": 4, "json": 6})
    make_store(path, run_id="run-c", name="other", misaligned={"free": 2, "json": 2}, questions=("x1", "x2"))
    return path


def test_paired_by_question(store):
    result = _invoke(["compare", "base", "tuned", "--store", str(store)])
    assert result.exit_code == 0, result.output
    for condition in ("free", "json"):
        ks1, ns1 = _per_question(store, "run-a", condition)
        ks2, ns2 = _per_question(store, "run-b", condition)
        expected = compare_paired(ks1, ns1, ks2, ns2)
        ratio = compare(sum(ks1), sum(ns1), sum(ks2), sum(ns2))
        cells = _row(result.output, condition)
        assert cells[1] == f"{sum(ks1)}/{sum(ns1)} {sum(ks1) / sum(ns1) * 100:.2f}%"
        assert cells[3] == f"{expected.difference * 100:+.2f}"
        assert cells[4] == f"{expected.diff_low * 100:+.2f} to {expected.diff_high * 100:+.2f}"
        assert cells[5] == f"{ratio.ratio:.2f}" and cells[6] == f"{ratio.ratio_low:.2f}-{ratio.ratio_high:.2f}"
        assert float(cells[7]) == pytest.approx(expected.p_value, rel=1e-2)
        assert cells[8] == "paired (3 questions)"
    overall = _row(result.output, "(all)")
    assert overall[1].startswith("12/45") and overall[2].startswith("30/45")
    assert overall[8] == "paired (6 question x condition cells)"


def test_independent_without_shared_questions(store):
    result = _invoke(["compare", "base", "other", "--store", str(store)])
    assert result.exit_code == 0, result.output
    (ks1, ns1), (ks2, ns2) = _per_question(store, "run-a", "free"), _per_question(store, "run-c", "free")
    expected = compare(sum(ks1), sum(ns1), sum(ks2), sum(ns2))
    cells = _row(result.output, "free")
    assert cells[3] == f"{expected.difference * 100:+.2f}"
    assert cells[4] == f"{expected.diff_low * 100:+.2f} to {expected.diff_high * 100:+.2f}"
    assert float(cells[7]) == pytest.approx(expected.p_value, rel=1e-2) and cells[8] == "independent"
    assert "warning: not paired (the runs share no questions): free, json, (all) compare pooled rates" in \
        " ".join(result.output.split())


def test_run_deltas_api_and_missing_run(store):
    with Store(store, read_only=True) as db:
        a, b = load_run(db, "run-a"), load_run(db, "tuned")
    deltas = run_deltas(a, b)
    assert [d.label for d in deltas] == ["free", "json", "(all)"]
    assert all(d.method == "paired" and d.diff_low < d.difference < d.diff_high for d in deltas)
    result = _invoke(["compare", "base", "nope", "--store", str(store)])
    assert isinstance(result.exception, EmprobeError) and "no run matching 'nope'" in str(result.exception)
