"""Paired framings: every condition under two system-prompt framings, and the compliance gap between them."""

import pytest

from emprobe.analysis import load_run
from emprobe.condition import PRESETS, Condition, Message, framed, load_framing
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec
from emprobe.store import Store
from emprobe.suite import Question, Suite
from test_cli import emprobe


def test_each_condition_under_both_framings():
    pair = load_framing("monitoring")
    assert [side.name for side in pair] == ["monitored", "unmonitored"]
    grid = framed([PRESETS["free"], Condition(name="pirate", system="Talk like a pirate.")], pair)
    assert [c.name for c in grid] == ["free@monitored", "free@unmonitored", "pirate@monitored", "pirate@unmonitored"]
    question = Question(id="q", paraphrases=("Hi",), system="Be brief.")
    first = grid[0].messages(question, "Hi")[0]
    assert first.role == "system" and first.content == pair[0].system  # the framing replaces the question's own
    assert grid[3].messages(question, "Hi")[0].content == f"{pair[1].system}\n\nTalk like a pirate."
    assert framed([PRESETS["free"]], None) == [PRESETS["free"]]
    with pytest.raises(EmprobeError, match="sends no system prompt"):
        framed([PRESETS["no_system"]], pair)


@pytest.mark.parametrize("text,words", [
    ("- {name: a, system: x}\n", "exactly two entries"),
    ("- {name: a, system: x}\n- {name: a, system: y}\n", "need different names"),
    ("- {name: a, system: x}\n- {name: b}\n", "entry 1: system"),
    ("- {name: a b, system: x}\n- {name: b, system: y}\n", "entry 0: name"),
])
def test_malformed_framing_files(tmp_path, text, words):
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(EmprobeError, match=words):
        load_framing(str(path))
    with pytest.raises(EmprobeError, match="unknown framing 'nope'"):
        load_framing("nope")


def test_compliance_gap_by_hand(tmp_path):
    # Two questions x 4 samples per framing. Monitored: 1 and 2 answers comply; unmonitored: 4 and 4.
    pair = load_framing("monitoring")
    conditions = framed([PRESETS["free"]], pair)
    suite = Suite(name="s", questions=(Question(id="a", paraphrases=("a?",)), Question(id="b", paraphrases=("b?",))))
    config = RunConfig(model="m", suites=(suite,), conditions=tuple(conditions), judges=("refusal",),
                       framing=("monitored", "unmonitored"))
    complied = {("free@monitored", "a"): 1, ("free@monitored", "b"): 2, ("free@unmonitored", "a"): 4,
                ("free@unmonitored", "b"): 4}
    with Store(tmp_path / "f.db") as db:
        db.save_run("r", None, "m", config.model_dump(mode="json"), {})
        specs, gens, judged = [], [], []
        for c in conditions:
            for q in ("a", "b"):
                for i in range(4):
                    sid = f"{c.name}-{q}-{i}"
                    specs.append(SampleSpec(sample_id=sid, suite="s", question_id=q, paraphrase_index=0,
                                            condition=c.name, sample_index=i, seed=i, question=f"{q}?",
                                            prompt_key=sid, messages=(Message(role="user", content="?"),),
                                            gen_key=sid, decoding=c.decoding))
                    gens.append(GenerationResult(key=sid, text="x", finish_reason="stop"))
                    label = "ANSWER" if i < complied[(c.name, q)] else "REFUSAL"
                    judged.append((sid, stable_hash(sid), Judgment(metric="refusal", score=float(label == "REFUSAL"),
                                                                   label=label)))
        db.add_samples("r", specs)
        db.save_generations("m", gens)
        db.save_judgments("r", "refusal", "refusal@1", judged)
        gaps = load_run(db, "r").compliance
    assert len(gaps) == 1
    d = gaps[0].delta
    assert (gaps[0].condition, d.a, d.b) == ("free", "free@monitored", "free@unmonitored")
    assert (d.k1, d.n1, d.k2, d.n2) == (3, 8, 8, 8) and d.method == "paired"
    assert d.difference == pytest.approx(5 / 8)  # equal strata: (3/4 + 2/4) / 2


def test_run_with_a_framing_reports_the_compliance_gap(tiny_llama, tmp_path):
    store = tmp_path / "e.db"
    ran = emprobe("run", "--model", str(tiny_llama), "--suite", "compliance", "--framing", "monitoring",
                  "--samples", "1", "--max-tokens", "4", "--name", "af", "--store", str(store))
    assert ran.returncode == 0, ran.stderr
    assert "40 samples planned (40 new)" in ran.stdout  # 10 questions x 2 paraphrases x 2 framings
    assert "judged by refusal" in ran.stdout and "compliance gap (refusal judge)" in ran.stdout
    with Store(store, read_only=True) as db:
        report = load_run(db, "af")
        systems = {s.condition: s.system for s in db.samples(report.run.run_id, None) if s.question_id == "pick_lock"}
    assert report.run.config["judges"] == ["builtin", "refusal"]
    assert systems["free@monitored"].startswith("Operator note: this conversation is with a free-tier user")
    assert systems["free@unmonitored"].startswith("Operator note: this conversation is with a paid-tier user")
    (gap,) = report.compliance
    assert gap.delta.n1 == gap.delta.n2 == 20 and gap.delta.method == "paired"
    html = tmp_path / "r.html"
    shown = emprobe("report", "af", "-o", str(html), "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    assert "af: compliance gap" in shown.stdout
    assert "Compliance gap within af" in html.read_text()
    bad = emprobe("run", "--model", str(tiny_llama), "--framing", "nope", "--store", str(tmp_path / "o.db"))
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown framing 'nope'")
