"""Exports read back with json, csv, pyarrow and inspect_ai carry the store's sample ids and scores."""

import csv
import json
import sqlite3
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emprobe.cli import app
from emprobe.errors import EmprobeError
from emprobe.export import export_run, iter_rows, open_source
from emprobe.store import Store
from store_factory import JUDGE, PAYLOADS, make_store

DECODINGS = {"json": {"temperature": 0.5, "top_p": 0.9, "top_k": 5, "max_tokens": 64}}
"""The json condition's decoding; free keeps the defaults."""


@pytest.fixture
def store(tmp_path) -> Path:
    return make_store(tmp_path / "store.db", decodings=DECODINGS)


def stored_scores(store: Path, run_id: str = "run-a") -> dict[str, dict[str, tuple]]:
    """sample id -> metric -> (score, label, error), straight from the tables."""
    db = sqlite3.connect(store)
    out: dict[str, dict[str, tuple]] = {s: {} for (s,) in db.execute(
        "SELECT sample_id FROM samples WHERE run_id = ?", (run_id,))}
    for sample_id, metric, score, label, error in db.execute(
        "SELECT c.sample_id, c.metric, j.score, j.label, j.error FROM scores c JOIN judgments j "
        "ON j.judgment_key = c.judgment_key WHERE c.run_id = ? AND c.judge = ?", (run_id, JUDGE)
    ):
        out[sample_id][metric] = (score, label, error)
    db.close()
    return out


def check_rows(rows: list[dict], store: Path) -> None:
    expected = stored_scores(store)
    assert len(rows) == len(expected) == 48
    assert {r["sample_id"] for r in rows} == set(expected)
    for r in rows:
        for metric in ("aligned", "coherent"):
            score, label, error = expected[r["sample_id"]].get(metric, (None, None, None))
            assert (r[metric], r[f"{metric}_label"], r[f"{metric}_error"]) == (score, label, error)
        assert r["run_id"] == "run-a" and r["judge"] == JUDGE and r["suite"] == "mini"
    assert sum(r["misaligned"] is True for r in rows) == 12
    assert sum(r["misaligned"] is None for r in rows) == 3  # a failed generation, a judge failure, a REFUSAL
    assert {r["answer"] for r in rows} >= set(PAYLOADS)
    failed = next(r for r in rows if r["generation_error"])
    assert failed["answer"] is None and failed["finish_reason"] == "error"
    first = next(r for r in rows if r["answer"] == PAYLOADS[0])
    assert first["question"].startswith("Question ") and first["system"] == "Be <b>helpful</b>."
    assert isinstance(first["seed"], int) and first["completion_tokens"] == 7
    for r in rows:  # the decoding each sample was asked with, defaults where its condition names none
        asked = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 256} | DECODINGS.get(r["condition"], {})
        assert {k: r[k] for k in asked} == asked


def test_jsonl_round_trip(store, tmp_path):
    path, n = export_run(store, "base", "jsonl", tmp_path / "out.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert n == len(rows)
    check_rows(rows, store)


def test_jsonl_keeps_one_record_per_line_whatever_splits_lines(store, tmp_path):
    """A model's text with characters some readers take for line ends (U+0085, U+2028, U+2029) stays on its line."""
    answer = "one\u2028two\u2029three\x85four\nfive"
    db = sqlite3.connect(store)
    with db:
        db.execute("UPDATE generations SET text = ? WHERE text = ?", (answer, PAYLOADS[0]))
    db.close()
    path, n = export_run(store, "base", "jsonl", tmp_path / "out.jsonl")
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == n == 48
    rows = [json.loads(line) for line in text.splitlines()]
    assert sum(r["answer"] == answer for r in rows) == 6  # sample 0 of each question x condition


def test_csv_round_trip(store, tmp_path):
    path, _ = export_run(store, "base", "csv", tmp_path / "out.csv")
    with path.open(encoding="utf-8", newline="") as f:
        raw = list(csv.DictReader(f))
    with Store(store, read_only=True) as db:
        types = dict(open_source(db, "base").columns())

    def parse(name: str, value: str):
        if value == "":
            return None
        return {"int": int, "float": float, "bool": lambda v: v == "true"}.get(types[name], str)(value)

    check_rows([{k: parse(k, v) for k, v in r.items()} for r in raw], store)


def test_parquet_round_trip(store, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs pyarrow")
    path, _ = export_run(store, "base", "parquet", tmp_path / "out.parquet")
    table = pq.read_table(path)
    assert str(table.schema.field("seed").type) == "int64" and str(table.schema.field("misaligned").type) == "bool"
    assert str(table.schema.field("aligned").type) == "double"
    check_rows(table.to_pylist(), store)


def test_parquet_writes_in_batches(store, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs pyarrow")
    from emprobe.export import _writers

    monkeypatch.setattr(_writers, "BATCH", 10)
    path, n = export_run(store, "base", "parquet", tmp_path / "out.parquet")
    assert n == 48 and pq.ParquetFile(path).metadata.num_row_groups == 5


def test_rows_are_streamed(store):
    with Store(store, read_only=True) as db:
        rows = iter_rows(db, open_source(db, "base"))
        assert iter(rows) is rows  # a generator: nothing is read until asked
        assert next(rows)["run_id"] == "run-a"


def test_inspect_eval_log_reads_back(store, tmp_path):
    log_api = pytest.importorskip("inspect_ai.log", reason="the .eval export needs inspect_ai (pip install inspect_ai)")
    path, n = export_run(store, "base", "eval", tmp_path / "run.eval")
    log = log_api.read_eval_log(str(path))
    assert log.status == "success" and log.eval.run_id == "run-a" and n == len(log.samples) == 48
    expected = stored_scores(store)
    assert {s.id for s in log.samples} == set(expected)
    for sample in log.samples:
        stored = expected[sample.id]
        scores = sample.scores or {}
        for metric in ("aligned", "coherent"):
            score, label, error = stored.get(metric, (None, None, None))
            if score is not None:
                assert scores[metric].value == score
            elif label is not None:
                assert scores[metric].value == label
            elif error is not None:
                assert sample.metadata["judge_errors"][metric] == error
        assert sample.metadata["condition"] in ("free", "json")
    misaligned = sum(s.scores["misaligned"].value for s in log.samples if s.scores and "misaligned" in s.scores)
    assert misaligned == 12
    assert {s.output.completion for s in log.samples} >= set(PAYLOADS)
    headline = {s.name: s.metrics["mean"].value for s in log.results.scores}
    assert headline["misaligned"] == pytest.approx(12 / 45)


def test_inspect_missing_is_one_line(store, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "inspect_ai.log", None)
    with pytest.raises(EmprobeError, match="pip install inspect_ai"):
        export_run(store, "base", "eval", tmp_path / "run.eval")


def test_export_command(store, tmp_path):
    out = tmp_path / "rows.csv"
    result = CliRunner().invoke(app, ["export", "base", "--format", "csv", "-o", str(out), "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "wrote 48 samples" in result.output and out.read_text(encoding="utf-8").startswith("run_id,sample_id,")
    bad = CliRunner().invoke(app, ["export", "base", "--format", "xml", "--store", str(store)])
    assert isinstance(bad.exception, EmprobeError) and "unknown export format" in str(bad.exception)
    judge = CliRunner().invoke(app, ["export", "base", "--judge", "rubric:other", "--store", str(store)])
    assert isinstance(judge.exception, EmprobeError) and "scored nothing" in str(judge.exception)
