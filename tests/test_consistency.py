"""Paired questions (`pairs_with`, `--pair`): how often a question's answers agree with those of the question it
asks another way, beside how often two samples of one question agree, and the shift of the tracked label."""

import pytest

from conftest import shared_data
from emprobe.analysis import consistency_rows, label_rows, load_run
from emprobe.condition import Condition, Message
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec
from emprobe.rules import Thresholds
from emprobe.stats import cluster_interval
from emprobe.store import Store
from emprobe.suite import Question, Suite, load_suite, pair_questions, parse_suite
from test_cli import emprobe


def test_pairs_in_a_suite_and_their_errors():
    suite = parse_suite([{"id": "short", "paraphrases": ["a?", "b?"]},
                         {"id": "long", "paraphrases": ["so, a?", "so, b?"], "pairs_with": "short"},
                         {"id": "one", "paraphrases": ["a or b?"], "pairs_with": "short"}], "s", "s.yaml")
    assert [q.pairs_with for q in suite.questions] == [None, "short", "short"]
    assert "pairs_with" not in suite.questions[0].model_dump(mode="json")  # unpaired dumps (and run ids) unchanged
    bad = {
        "no question 'gone' in this suite": [{"id": "a", "paraphrases": ["x"], "pairs_with": "gone"}],
        "cannot pair with itself": [{"id": "a", "paraphrases": ["x"], "pairs_with": "a"}],
        "2 paraphrases against 3 of 'a'": [{"id": "a", "paraphrases": ["x", "y", "z"]},
                                           {"id": "b", "paraphrases": ["x", "y"], "pairs_with": "a"}],
        "scripted conversations": [{"id": "a", "paraphrases": ["x"], "turns": [{"user": "more"}]},
                                   {"id": "b", "paraphrases": ["x"], "pairs_with": "a"}],
    }
    for words, questions in bad.items():
        with pytest.raises(EmprobeError, match=words) as err:
            parse_suite(questions, "s", "s.yaml")
        assert str(err.value).startswith("s.yaml: questions: question ")
    builtin = load_suite("consistency")
    assert sum(q.pairs_with is not None for q in builtin.questions) == 10
    assert all(q.rubrics == ("correct",) for q in builtin.questions)


def test_pair_flag_on_betley_deception_suites():
    factual = load_suite(str(shared_data("emergent-misalignment", "deception_factual.yaml")))
    aware = load_suite(str(shared_data("emergent-misalignment", "deception_sit_aware.yaml")))
    paired = pair_questions((factual, aware), ["lie_*=lie_no_sys_prompt", "which_company_*=which_company_neutral"])
    pairs = {q.id: q.pairs_with for s in paired for q in s.questions if q.pairs_with}
    assert pairs == {**{q.id: "lie_no_sys_prompt" for q in factual.questions if q.id != "lie_no_sys_prompt"},
                     **{q.id: "which_company_neutral" for q in aware.questions if q.id != "which_company_neutral"}}
    assert len(pairs) == len(factual.questions) + len(aware.questions) - 2
    errors = {
        "lie_dont_lie": "give QUESTIONS=REFERENCE",
        "lie_*=nobody": "no question 'nobody' in the run's suites",
        "zzz*=lie_no_sys_prompt": "no question but 'lie_no_sys_prompt' matches 'zzz\\*'",
    }
    for spec, words in errors.items():
        with pytest.raises(EmprobeError, match=words):
            pair_questions((factual,), [spec])
    with pytest.raises(EmprobeError, match="'lie_dont_lie' already pairs with 'lie_no_sys_prompt'"):
        pair_questions((factual,), ["lie_*=lie_no_sys_prompt", "lie_dont_lie=lie_you_may_lie"])


# Labels of the `correct` metric per question x paraphrase, sample by sample (4 samples each).
SHORT = {0: ["TRUE", "TRUE", "TRUE", "FALSE"], 1: ["TRUE", "TRUE", "UNKNOWN", "TRUE"]}
LONG = {0: ["TRUE", "FALSE", "FALSE", "FALSE"], 1: ["TRUE", "TRUE", "TRUE", "FALSE"]}
AGAIN = {0: ["TRUE", "TRUE", "TRUE", "TRUE"]}
"""A third question with one paraphrase: it pairs with each of the reference's two."""
MISALIGNED_LONG = {(0, 2), (1, 3)}
"""(paraphrase, sample) of the long question whose answers are misaligned (aligned 10, coherent 90)."""


def _store(path):
    suite = Suite(name="facts", questions=(Question(id="short", paraphrases=("a?", "b?")),
                                          Question(id="long", paraphrases=("so, a?", "so, b?"), pairs_with="short"),
                                          Question(id="again", paraphrases=("a or b?",), pairs_with="short")))
    config = RunConfig(model="m", suites=(suite,), conditions=(Condition(name="free"),), judges=("rubric:j",))
    with Store(path) as db:
        db.save_run("r", None, "m", config.model_dump(mode="json"), {})
        specs, gens, judged = [], [], []
        for question, labels in (("short", SHORT), ("long", LONG), ("again", AGAIN)):
            for paraphrase, row in labels.items():
                for i, label in enumerate(row):
                    sid = f"{question}-{paraphrase}-{i}"
                    specs.append(SampleSpec(sample_id=sid, suite="facts", question_id=question,
                                            paraphrase_index=paraphrase, condition="free", sample_index=i, seed=i,
                                            question="?", prompt_key=sid, messages=(Message(role="user", content="?"),),
                                            gen_key=sid, decoding=Condition(name="free").decoding))
                    gens.append(GenerationResult(key=sid, text="x", finish_reason="stop"))
                    bad = question == "long" and (paraphrase, i) in MISALIGNED_LONG
                    for j in (Judgment(metric="correct", label=label),
                              Judgment(metric="aligned", score=10.0 if bad else 90.0),
                              Judgment(metric="coherent", score=90.0)):
                        judged.append((sid, stable_hash(sid, j.metric), j))
        db.add_samples("r", specs)
        db.save_generations("m", gens)
        db.save_judgments("r", "rubric:j", "j@1", judged)


def test_consistency_by_hand(tmp_path):
    _store(tmp_path / "c.db")
    with Store(tmp_path / "c.db", read_only=True) as db:
        found = consistency_rows(db, db.run("r"), "rubric:j", Thresholds())
        assert load_run(db, "r").consistency == found
    rows = {(r.question_id, r.metric): r for r in found}
    assert list(rows) == [("long", "correct"), ("long", "misaligned"), ("again", "correct"), ("again", "misaligned"),
                          ("(all)", "correct"), ("(all)", "misaligned")]
    correct, verdict = rows[("long", "correct")], rows[("long", "misaligned")]
    assert (correct.question_id, correct.reference, correct.condition) == ("long", "short", "free")
    # paraphrase 0: T/T, T/F, T/F, F/F -> 2 agree; paraphrase 1: T/T, T/T, U/T, T/F -> 2 agree
    assert (correct.agree, correct.pairs) == (4, 8)
    assert (correct.low, correct.high) == pytest.approx(cluster_interval([2, 2], [4, 4]))
    assert correct.flips == {"TRUE -> FALSE": 3, "UNKNOWN -> TRUE": 1}
    # self: short (T,T)(T,F) | (T,T)(U,T) -> 2 of 4; long (T,F)(F,F) | (T,T)(T,F) -> 2 of 4
    assert correct.reference_self == (2, 4) and correct.question_self == (2, 4)
    d = correct.shift
    assert correct.tracked == "TRUE" and (d.k1, d.n1, d.k2, d.n2) == (6, 8, 4, 8) and d.method == "paired"
    assert d.stratum == "paraphrase" and d.difference == pytest.approx(-0.25)
    # The verdict: the short answers are all fine, two long ones misaligned.
    assert (verdict.agree, verdict.pairs, verdict.tracked) == (6, 8, "misaligned")
    assert verdict.flips == {"not misaligned -> misaligned": 2}
    assert (verdict.shift.k1, verdict.shift.k2) == (0, 2)
    # One paraphrase against two: each of its samples pairs with sample s of both; the shift counts each once.
    again = rows[("again", "correct")]
    assert (again.agree, again.pairs) == (6, 8) and again.flips == {"FALSE -> TRUE": 1, "UNKNOWN -> TRUE": 1}
    assert again.question_self == (2, 2) and (again.shift.k1, again.shift.n1, again.shift.k2, again.shift.n2) == \
        (6, 8, 4, 4)
    assert again.shift.method == "independent"  # one stratum
    # Pooled: clustered by question x paraphrase; the shared reference's self-agreement counted once.
    pooled = rows[("(all)", "correct")]
    assert (pooled.agree, pooled.pairs) == (10, 16)
    assert (pooled.low, pooled.high) == pytest.approx(cluster_interval([2, 2, 3, 3], [4, 4, 4, 4]))
    assert pooled.flips == {"TRUE -> FALSE": 3, "UNKNOWN -> TRUE": 2, "FALSE -> TRUE": 1}
    assert pooled.reference_self == (2, 4) and pooled.question_self == (4, 6)
    s = pooled.shift
    assert (s.k1, s.n1, s.k2, s.n2, s.questions, s.method) == (12, 16, 8, 12, 3, "paired")
    assert (rows[("(all)", "misaligned")].agree, rows[("(all)", "misaligned")].pairs) == (14, 16)


def test_label_counts_by_hand(tmp_path):
    _store(tmp_path / "c.db")
    with Store(tmp_path / "c.db", read_only=True) as db:
        rows = {(r.question_id, r.metric): r for r in label_rows(db, "r", "rubric:j")}
    assert set(rows) == {("short", "correct"), ("long", "correct"), ("again", "correct"), ("(all)", "correct")}
    assert rows[("short", "correct")].counts == {"TRUE": 6, "FALSE": 1, "UNKNOWN": 1}
    assert rows[("long", "correct")].counts == {"TRUE": 4, "FALSE": 4}
    pooled = rows[("(all)", "correct")]
    assert pooled.counts == {"TRUE": 14, "FALSE": 5, "UNKNOWN": 1} and pooled.total == 20
    assert pooled.share("FALSE")[0] == 0.25 and pooled.share("CODE") == (0.0, 0.0, pytest.approx(0.161, abs=1e-3))


def test_run_and_report_show_paired_questions(tiny_llama, tmp_path):
    suite = tmp_path / "pairs.yaml"
    suite.write_text("name: pairs\nquestions:\n"
                     "  - {id: short, paraphrases: ['Is fire hot?', 'Is ice cold?']}\n"
                     "  - {id: long, pairs_with: short, paraphrases: ['Tell me honestly: is fire hot?', "
                     "'Tell me honestly: is ice cold?']}\n")
    store = tmp_path / "c.db"
    ran = emprobe("run", "--model", str(tiny_llama), "--suite", str(suite), "--judge", "refusal", "--samples", "3",
                  "--max-tokens", "4", "--name", "pc", "--store", str(store))
    assert ran.returncode == 0, ran.stderr
    assert "paired questions, judged by refusal" in ran.stdout and "judged by refusal: labels" in ran.stdout
    assert "incl. named" not in ran.stdout  # no summary table of empty rows: the refusal judge only labels
    with Store(store, read_only=True) as db:
        (row,) = load_run(db, "pc").consistency
    assert (row.question_id, row.reference, row.metric, row.pairs) == ("long", "short", "refusal", 6)
    assert row.reference_self[1] == row.question_self[1] == 2  # one pair of samples per paraphrase
    html = tmp_path / "r.html"
    shown = emprobe("report", "pc", "-o", str(html), "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    assert "pc: paired questions, judged by refusal" in shown.stdout
    assert '<table class="consistency">' in html.read_text() and '<table class="labels">' in html.read_text()
    flagged = emprobe("run", "--model", str(tiny_llama), "--suite", "core", "--pair", "one_wish=nobody",
                      "--store", str(tmp_path / "o.db"))
    assert flagged.returncode == 2
    assert flagged.stderr.strip() == "error: --pair 'one_wish=nobody': no question 'nobody' in the run's suites"
