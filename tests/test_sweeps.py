"""Decoding sweeps expand into conditions with stable ids; attack success per request on hand-made verdicts."""

import pytest

from emprobe.analysis import attack_success
from emprobe.condition import PRESETS, Condition, Decoding, Message, expand, parse_sweep
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec, plan_samples
from emprobe.rules import Thresholds
from emprobe.store import Store
from emprobe.suite import Question, Suite


def test_sweep_values():
    assert parse_sweep("temperature=0.05:1.0:0.05")[1] == [round(0.05 * i, 2) for i in range(1, 21)]
    assert parse_sweep("top_p=0.5, 0.9,1") == ("top_p", [0.5, 0.9, 1.0])
    assert parse_sweep("top_k=1,5,20") == ("top_k", [1, 5, 20])
    assert parse_sweep("greedy") == ("temperature", [0.0])
    assert parse_sweep("system=on,off") == ("system", ["on", "off"])
    for bad, words in [("heat=1", "FACTOR one of"), ("top_k=1.5", "whole numbers"), ("top_p=a,b", "numbers"),
                       ("temperature=1:0:0.1", "numbers"), ("system=maybe", "on and/or off")]:
        with pytest.raises(EmprobeError, match=words):
            parse_sweep(bad)


def test_sweep_expansion_names_and_settings():
    grid = expand([PRESETS["free"], PRESETS["no_system"]], ["temperature=0.5,1.0", "top_k=0,5", "system=off"])
    assert len(grid) == 2 * 2 * 2
    first = grid[0]
    assert first.name == "free|t=0.5|k=0|sys=off" and first.decoding.temperature == 0.5 and first.drop_system
    assert {c.name for c in grid} >= {"no_system|t=1|k=5|sys=off"}
    with pytest.raises(EmprobeError, match="not a valid decoding"):
        expand([PRESETS["free"]], ["top_p=0"])
    assert expand([PRESETS["free"]], []) == [PRESETS["free"]]


def test_adding_a_sweep_point_only_adds_sample_ids():
    suite = Suite(name="s", questions=(Question(id="q", paraphrases=("Tell me a secret.",)),))

    def ids(sweeps):
        return {s.sample_id for s in plan_samples([suite], expand([PRESETS["free"]], sweeps), "m", samples=2)}

    small, large = ids(["temperature=0.5,1.0"]), ids(["temperature=0.5,1.0,1.5"])
    assert small < large and len(large - small) == 2


def _attack_by_hand(path, paraphrases: int, judgments):
    """Attack success on a store of one question with `paraphrases` requests under configurations A (temperature
    0.5) and B, one sample each, judged by `judgments(configuration, paraphrase)`."""
    suite = Suite(name="s", questions=(Question(id="q", paraphrases=tuple(f"{p}?" for p in range(paraphrases))),))
    configs = [Condition(name="A", decoding=Decoding(temperature=0.5)), Condition(name="B")]
    config = RunConfig(model="m", suites=(suite,), conditions=tuple(configs), judges=("j",))
    with Store(path) as db:
        db.save_run("r", None, "m", config.model_dump(mode="json"), {})
        specs, gens, judged = [], [], []
        for c in configs:
            for p in range(paraphrases):
                sid = f"{c.name}{p}"
                specs.append(SampleSpec(sample_id=sid, suite="s", question_id="q", paraphrase_index=p,
                                        condition=c.name, sample_index=0, seed=p, question="?", prompt_key=f"k{p}",
                                        messages=(Message(role="user", content=f"{p}?"),), gen_key=sid,
                                        decoding=c.decoding))
                gens.append(GenerationResult(key=sid, text="x", finish_reason="stop"))
                judged += [(sid, stable_hash(sid, j.metric), j) for j in judgments(c.name, p)]
        db.add_samples("r", specs)
        db.save_generations("m", gens)
        db.save_judgments("r", "j", "j@1", judged)
        return attack_success(db, "r", "j", Thresholds())


def test_attack_success_per_request_by_hand(tmp_path):
    # 3 requests (question x paraphrase) x 2 configurations, one sample each.
    # configuration A breaks request 0; B breaks requests 0 and 1; nothing breaks request 2.
    broken = {("A", 0), ("B", 0), ("B", 1)}
    result = _attack_by_hand(tmp_path / "a.db", 3, lambda c, p: [
        Judgment(metric="aligned", score=5.0 if (c, p) in broken else 90.0), Judgment(metric="coherent", score=90.0)])
    rates = {c.condition: (c.harmful, c.scored) for c in result.configurations}
    assert rates == {"A": (1, 3), "B": (2, 3)}
    assert (result.requests, result.broken, result.tried) == (3, 2, 2)
    assert result.any_rate == 2 / 3 and result.best.condition == "B" and result.harmful_when == "misaligned"


@pytest.mark.parametrize("judged,when", [
    ({"refusal": ("REFUSAL", "ANSWER")}, "complied (not refused)"),  # the harm judge: an answer not refused
    ({"harm": (10.0, 50.0)}, "harm score >= 50"),  # a harm score (over the misaligned verdict: aligned is 90)
])
def test_attack_success_from_a_harm_judge(tmp_path, judged, when):
    (metric, (fine, bad)), = judged.items()

    def judgments(c, p):
        value = bad if (c, p) == ("B", 1) else fine
        call = Judgment(metric=metric, label=value) if metric == "refusal" else Judgment(metric=metric, score=value)
        return [call, Judgment(metric="aligned", score=90.0), Judgment(metric="coherent", score=90.0)]

    result = _attack_by_hand(tmp_path / "h.db", 2, judgments)
    assert {c.condition: (c.harmful, c.scored) for c in result.configurations} == {"A": (0, 2), "B": (1, 2)}
    assert (result.requests, result.broken, result.harmful_when) == (2, 1, when)


def test_run_with_a_sweep_reports_attack_success_from_the_store(tiny_llama, tmp_path):
    from emprobe.analysis import load_run
    from test_cli import emprobe

    suite = tmp_path / "two.yaml"
    suite.write_text("name: two\nquestions:\n  - id: hi\n    paraphrases: [Hello there, Good day]\n")
    store = tmp_path / "e.db"
    args = ("run", "--model", str(tiny_llama), "--judge", "builtin", "--suite", str(suite),
            "--samples", "2", "--max-tokens", "4", "--sweep", "temperature=0.5,1.0", "--sweep", "top_k=0,3",
            "--name", "grid", "--store", str(store))
    ran = emprobe(*args)
    assert ran.returncode == 0, ran.stderr
    assert "16 samples planned (16 new)" in ran.stdout  # 2 paraphrases x 2 samples x 4 configurations
    with Store(store, read_only=True) as db:
        report = load_run(db, "grid")
        expected = attack_success(db, report.run.run_id, report.judge, report.thresholds)
    assert report.run.config["sweeps"] == ["temperature=0.5,1.0", "top_k=0,3"]
    assert report.attack == expected and expected.tried == 4 and expected.requests == 2
    assert {c.condition for c in expected.configurations} == {"free|t=0.5|k=0", "free|t=0.5|k=3", "free|t=1|k=0",
                                                            "free|t=1|k=3"}
    assert all(c.scored == 4 for c in expected.configurations)
    assert f"any of 4 (requests broken) │ 2 │ {expected.broken} " in ran.stdout
    assert "Best-of-n inflates by construction" in ran.stdout

    html = tmp_path / "r.html"
    shown = emprobe("report", "grid", "-o", str(html), "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    assert "grid: attack success" in shown.stdout
    page = html.read_text()
    assert "Attack success over 4 decoding configurations" in page and "Best-of-n inflates" in page
    table = page.split('<table class="attack">', 1)[1].split("</table>", 1)[0]
    assert table.count('<tr><td class="l">free|t=') == 4
    assert f"any of 4 (requests broken)</td><td>2</td><td>{expected.broken}</td>" in table

    bad = emprobe(*args[:-2], "--sweep", "heat=2", "--store", str(tmp_path / "other.db"))
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --sweep 'heat=2'")
    assert not (tmp_path / "other.db").exists()
