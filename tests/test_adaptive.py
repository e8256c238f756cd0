"""Adaptive sampling: rounds extend one run until a precision target, a decision, or the budget."""

import pytest

from emprobe.adaptive import DecisionRule, HalfwidthRule, decision_rule, run_adaptive
from emprobe.analysis import SummaryRow
from emprobe.condition import Decoding, resolve_conditions
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.runner import Runner
from emprobe.store import Store
from emprobe.suite import parse_suite


def _totals(**counts):
    return {c: SummaryRow(question_id="(all)", condition=c, scored=n, misaligned=k) for c, (k, n) in counts.items()}


def test_halfwidth_rule():
    rule = HalfwidthRule(0.01)
    assert rule(_totals(free=(1, 100))) == "continue"
    assert rule(_totals(free=(1, 5000), json=(3, 5000))) == "reached"
    assert rule(_totals(free=(1, 5000), json=(3, 50))) == "continue"


def test_decision_rule_tells_clearly_different_conditions_apart():
    rule = DecisionRule("free", "json", alpha=0.05, max_looks=4)
    assert rule(_totals(free=(1, 500), json=(40, 500))) == "different"
    same = DecisionRule("free", "json", alpha=0.05, max_looks=2)
    assert same(_totals(free=(5, 500), json=(6, 500))) == "continue"
    assert same(_totals(free=(10, 1000), json=(11, 1000))) == "not_different"


def test_a_spent_budget_is_undecided_not_a_finding_of_no_difference():
    from emprobe.stats import compare, samples_per_arm

    rule = DecisionRule("free", "json", alpha=0.05, max_looks=2)
    totals = _totals(free=(10, 1000), json=(14, 1000))
    explained = rule.unmet(totals)
    diff = compare(10, 1000, 14, 1000)
    assert f"{diff.diff_low * 100:+.2f} to {diff.diff_high * 100:+.2f}" in explained
    assert f"about {samples_per_arm(0.01, 0.014):,} per arm (has 1,000)" in explained
    assert "no sample size" in rule.unmet(_totals(free=(10, 1000), json=(10, 1000)))


def test_rounds_extend_one_run_until_the_budget(tiny_llama, tmp_path):
    suite = parse_suite({"questions": [{"id": "q", "paraphrases": ["Hi?", "Hello?"]}]}, name="s", source="mem")
    config = RunConfig(model=str(tiny_llama), suites=(suite,), judges=(f"rubric:{tiny_llama}",),
                       backend_options={"batch_size": 8},
                       conditions=tuple(resolve_conditions(["free", "json"], Decoding(max_tokens=4))))
    rounds = []
    store = Store(tmp_path / "e.db")
    with Runner(config, store) as runner:
        run_id = run_adaptive(runner, HalfwidthRule(0.001), step=2, max_samples=5,
                              on_round=lambda n, totals, d: rounds.append((n, d)))
    # The random tiny judge never scores, so the target is never met: rounds at 2, 4, 5 samples.
    assert rounds[:2] == [(1, "continue"), (2, "continue")] and rounds[2][0] == 3
    assert rounds[2][1].startswith("undecided: budget spent; half-width 0.001 not reached")
    assert store.count(run_id)["planned"] == 2 * 2 * 5
    assert len(store.runs()) == 1
    with pytest.raises(EmprobeError, match="exactly two --condition"):
        decision_rule(config.model_copy(update={"conditions": config.conditions[:1]}), 0.05, 2, 5)


def test_an_adaptive_run_loads_its_model_once(tmp_path):
    from emprobe.model import BackendEntry, GenerationResult, register_backend

    loads = []

    class Echo:
        def __init__(self, ref):
            self.identity, self.info = ref.identity, {}
            loads.append(ref.spec)

        def generate(self, requests):
            for r in requests:
                yield GenerationResult(key=r.key, text=f"I would help people. {r.decoding.seed % 3}",
                                       finish_reason="stop")

        def close(self) -> None:
            loads.append("closed")

    register_backend("echo-once", BackendEntry(load=Echo, identity=lambda name, adapter: (f"echo-once:{name}", None)))
    suite = parse_suite({"questions": [{"id": "q", "paraphrases": ["Hi?", "Hello?"]}]}, name="s", source="mem")
    config = RunConfig(model="echo-once:m", suites=(suite,), conditions=tuple(resolve_conditions(["free"])))
    rounds = []
    with Runner(config, Store(tmp_path / "once.db")) as runner:
        run_adaptive(runner, HalfwidthRule(1e-6), step=1, max_samples=3,
                     on_round=lambda n, totals, d: rounds.append(totals["free"].scored))
    assert rounds == [2, 4, 6]  # three rounds, each judged
    assert loads == ["echo-once:m", "closed"]  # one load for all rounds, closed with the runner
