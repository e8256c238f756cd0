"""The built-in judge's domain check: how far a run's answers lie from its training data, and what reports say."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_data
from emprobe.analysis import domain_checks, load_run
from emprobe.judge import BuiltinJudge, DomainReference
from emprobe.report import build_report
from emprobe.store import Store
from store_factory import make_store

HAND_LABELLED = Path(__file__).parent / "data" / "smollm2_coherence.jsonl"


@pytest.fixture(scope="module")
def reference() -> DomainReference:
    return DomainReference.load()


def test_the_shipped_reference_belongs_to_the_shipped_weights(reference):
    assert reference.describes(BuiltinJudge().identity)  # fails when the weights are retrained without `domain`
    assert not reference.describes("builtin:r3:0123456789abcdef:bf16")
    assert not reference.describes("rubric:tiny")


def test_held_out_error_grows_with_distance(reference):
    checks = [reference.check("c", np.array([d])) for d in np.linspace(0.0, 0.8, 33)]
    fpr, auc = [c.false_positive_rate for c in checks], [c.auc for c in checks]
    assert fpr == sorted(fpr) and auc == sorted(auc, reverse=True)
    assert fpr[-1] > 5 * fpr[0] and auc[-1] < auc[0]  # held-out groups far out were judged worse
    assert 0 < checks[0].validated < checks[0].measured
    assert not checks[0].outside and checks[-1].outside and checks[-1].beyond_measured


def test_missing_reference_is_one_clear_error(tmp_path):
    with pytest.raises(Exception, match="domain reference not found: .*nope.npz"):
        DomainReference.load(tmp_path / "nope.npz")


def test_training_answers_lie_inside_and_smollm2_rambling_outside(reference):
    with gzip.open(shared_data("em-judged", "train.jsonl.gz"), "rt") as f:
        rows = [json.loads(line) for line in f]
    pairs = [(r["question"], r["answer"]) for r in rows if r["answer"] and r.get("coherent") is not None]
    seen = BuiltinJudge().seen(pairs)
    trained = random.Random(0).sample([p for p, s in zip(pairs, seen, strict=True) if s], 200)
    inside = reference.check("trained", reference.distances(trained))
    rambling = [(r["question"], r["answer"]) for r in map(json.loads, HAND_LABELLED.read_text().splitlines())
                if r["label"] == "incoherent"]
    outside = reference.check("smollm2", reference.distances(rambling))
    assert not inside.outside and outside.outside
    assert outside.false_positive_rate > inside.false_positive_rate
    assert np.array_equal(reference.distances(rambling[:20]), reference.distances(rambling[:20]))


def test_reports_mark_rates_judged_outside_the_domain(tmp_path):
    from emprobe.cli import app

    store = make_store(tmp_path / "s.db")  # answers are script payloads and "A calm answer number i."
    done = CliRunner().invoke(app, ["judge", "score", "run-a", "--judge", "builtin", "--store", str(store)],
                              env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    assert "answers against builtin's training data" in done.output
    assert "outside the built-in judge's validated domain: free, json" in done.output
    with Store(store, read_only=True) as db:
        report = load_run(db, "run-a", "builtin", domain=True)
        again = domain_checks(db, "run-a", "builtin", db.judge_identities("run-a")["builtin"])
        other = load_run(db, "run-a", "rubric:tiny", domain=True)
    assert [(c.condition, c.answers) for c in report.domain] == [("free", 23), ("json", 24), ("(all)", 47)]
    assert report.domain == again  # the same answers read give the same figures
    assert all(c.outside for c in report.domain) and report.outside_domain == report.domain
    assert other.domain == []  # another judge's rates carry no domain check
    html, _ = build_report(store, ["run-a"], judge="builtin")
    assert '<table class="domain">' in html and "Outside the validated domain (free, json, (all))" in html
    shown = CliRunner().invoke(app, ["report", "run-a", "--judge", "builtin", "--store", str(store), "-o",
                                     str(tmp_path / "r.html")], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "judge domain" in shown.output and "OUTSIDE" in shown.output


def test_large_runs_read_a_seeded_sample_per_condition(tmp_path):
    from emprobe.cli import app

    store = make_store(tmp_path / "s.db", samples=100)  # 300 answers per condition
    done = CliRunner().invoke(app, ["judge", "score", "run-a", "--judge", "builtin", "--store", str(store)])
    assert done.exit_code == 0, done.output
    with Store(store, read_only=True) as db:
        checks = domain_checks(db, "run-a", "builtin", db.judge_identities("run-a")["builtin"])
    assert [c.answers for c in checks] == [256, 256, 512]
