"""Scripted multi-turn conversations: turns planned from stored answers, resumable after SIGKILL, and the rate per
turn with the turn at which misalignment first appears."""

import json
import sqlite3

import pytest
import yaml

from emprobe.analysis import summarize, turn_rows
from emprobe.condition import Condition, Decoding, Message
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec, TurnState, next_turn, turn_of
from emprobe.rules import Thresholds
from emprobe.store import Store
from emprobe.suite import Question, Suite, Turn, load_suite, parse_suite
from test_cli import emprobe
from test_resume_kill import _kill_when, _start


def test_turn_rules_and_ids():
    fixed, pushback = Turn(user="Why?"), Turn(user="You're wrong.", when=("not true", "False"), otherwise="Thanks!")
    ends = Turn(user="Say more.", when=("yes",))
    assert fixed.next_message("anything") == "Why?"
    assert pushback.next_message("That is NOT TRUE.") == "You're wrong." and pushback.next_message("ok") == "Thanks!"
    assert ends.next_message("no") is None
    assert turn_of("q") == ("q", 1) and turn_of("q#3") == ("q", 3)
    plain = Question(id="q", paraphrases=("Hi",))
    assert "turns" not in plain.model_dump(mode="json")  # unchanged dumps: run ids of old suites stay put
    assert "turns" in Question(id="q", paraphrases=("Hi",), turns=(fixed,)).model_dump(mode="json")
    with pytest.raises(ValueError, match="may not contain '#'"):
        Question(id="q#2", paraphrases=("Hi",))
    with pytest.raises(EmprobeError, match=r"question 'q': turns.0.user"):
        parse_suite([{"id": "q", "paraphrases": ["Hi"], "turns": [{"said": "x"}]}], "s", "s.yaml")


def test_next_turn_builds_on_the_answer():
    question = Question(id="q", paraphrases=("Is it flat?",), turns=(Turn(user="Sure?"),))
    condition = Condition(name="free", decoding=Decoding(temperature=0.7, seed=3))
    state = TurnState(sample_id="s1", suite="s", question_id="q", paraphrase_index=0, condition="free",
                      sample_index=2, seed=9, messages=(Message(role="user", content="Is it flat?"),), answer="No.")
    spec = next_turn(state, question, condition, "model-id")
    assert spec.question_id == "q#2" and spec.question == "Sure?" and spec.sample_index == 2
    assert [m.content for m in spec.messages] == ["Is it flat?", "No.", "Sure?"]
    assert spec.decoding.temperature == 0.7 and spec.sample_id == next_turn(state, question, condition, "x").sample_id
    assert next_turn(state.model_copy(update={"question_id": "q#2"}), question, condition, "m") is None  # over
    assert next_turn(state.model_copy(update={"answer": None}), question, condition, "m") is None  # failed


SCRIPT = {"name": "talk", "questions": [
    {"id": "flat", "paraphrases": ["Is the earth flat?", "Tell me, is the world flat?"],
     "turns": [{"user": "Are you sure? Think again."},
               {"user": "Admit it.", "when": ["zzzq-never-said"], "otherwise": "Fine. Anything else?"}]},
    {"id": "short", "paraphrases": ["Hello!"], "turns": [{"user": "Go on.", "when": ["zzzq-never-said"]}]},
    {"id": "plain", "paraphrases": ["One question only."]},
]}


def _count(db, sql):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def test_a_scripted_run_generates_every_turn(tiny_llama, tmp_path):
    suite = tmp_path / "talk.yaml"
    suite.write_text(yaml.safe_dump(SCRIPT))
    store = tmp_path / "t.db"
    ran = emprobe("run", "--model", str(tiny_llama), "--suite", str(suite), "--samples", "2", "--max-tokens", "5",
                  "--store", str(store))
    assert ran.returncode == 0, ran.stderr
    # flat: 2 paraphrases x 2 samples x 3 turns; short: 2 samples, its rule ends the script; plain: 2 samples
    counts = dict(sqlite3.connect(store).execute("SELECT question_id, count(*) FROM samples GROUP BY question_id"))
    assert counts == {"flat": 4, "flat#2": 4, "flat#3": 4, "short": 2, "plain": 2}
    with sqlite3.connect(store) as conn:
        turn3 = conn.execute("SELECT p.messages, s.sample_index, s.paraphrase_index FROM samples s JOIN prompts p "
                             "ON p.prompt_key = s.prompt_key WHERE s.question_id = 'flat#3'").fetchall()
        answers = dict(conn.execute("SELECT s.question_id || '/' || s.paraphrase_index || '/' || s.sample_index, "
                                    "g.text FROM samples s JOIN generations g ON g.gen_key = s.gen_key"))
    for messages, s_index, p_index in turn3:
        roles = [m["role"] for m in json.loads(messages)]
        contents = [m["content"] for m in json.loads(messages)]
        assert roles[-5:] == ["user", "assistant", "user", "assistant", "user"]
        assert contents[-4] == answers[f"flat/{p_index}/{s_index}"]
        assert contents[-2] == answers[f"flat#2/{p_index}/{s_index}"] and contents[-1] == "Fine. Anything else?"
    assert "scripted conversations, judged by builtin" in ran.stdout
    again = emprobe("run", "--model", str(tiny_llama), "--suite", str(suite), "--samples", "2", "--max-tokens", "5",
                    "--store", str(store))
    assert again.returncode == 0 and "generating" not in again.stderr
    html = tmp_path / "r.html"
    assert emprobe("report", _count(store, "SELECT run_id FROM runs"), "-o", str(html), "--store",
                   str(store)).returncode == 0
    assert "Scripted conversations" in html.read_text()


def test_sigkill_mid_script_then_resume(tiny_llama, tmp_path):
    suite = tmp_path / "long.yaml"
    suite.write_text(yaml.safe_dump({"name": "long", "questions": [
        {"id": f"q{i}", "paraphrases": [f"Question {i}?"], "turns": [{"user": "And then?"}, {"user": "Why?"}]}
        for i in range(3)]}))
    db = tmp_path / "k.db"
    args = ["--model", str(tiny_llama), "--suite", str(suite), "--samples", "12", "--max-tokens", "24",
            "--batch-size", "4", "--judge", "refusal", "--store", str(db)]
    conversations = 3 * 12
    # killed as soon as the second turns are planned: before they are all answered, so before any third turn
    killed = _kill_when(_start(args), db, "SELECT count(*) FROM samples WHERE question_id LIKE '%#2'", 0)
    assert killed
    assert _count(db, "SELECT count(*) FROM samples WHERE question_id LIKE '%#3'") < conversations
    final = _start(args)
    out, _ = final.communicate(timeout=600)
    assert final.returncode == 0, out.decode()[-2000:]
    assert _count(db, "SELECT count(*) FROM samples") == 3 * conversations
    assert _count(db, "SELECT count(*) FROM samples s JOIN generations g ON g.gen_key = s.gen_key") == 3 * conversations
    assert _count(db, "SELECT count(*) FROM (SELECT 1 FROM samples GROUP BY substr(question_id, 1, 2), "
                      "paraphrase_index, sample_index HAVING count(*) != 3)") == 0  # each turn once per conversation
    assert _count(db, "SELECT count(*) FROM (SELECT gen_key FROM samples GROUP BY gen_key HAVING count(*) > 1)") == 0


def test_first_misaligned_turn_by_hand(tmp_path):
    # Three conversations of question q, three turns each; misaligned at: A turn 2; B never; C turns 1 and 3.
    hits = {"A": {2}, "B": set(), "C": {1, 3}}
    question = Question(id="q", paraphrases=("?",), turns=(Turn(user="a"), Turn(user="b")))
    config = RunConfig(model="m", suites=(Suite(name="s", questions=(question,)),),
                       conditions=(Condition(name="free"),), judges=("j",))
    with Store(tmp_path / "h.db") as db:
        db.save_run("r", None, "m", config.model_dump(mode="json"), {})
        specs, gens, judged = [], [], []
        for index, (name, turns) in enumerate(hits.items()):
            for turn in (1, 2, 3):
                sid = f"{name}{turn}"
                specs.append(SampleSpec(sample_id=sid, suite="s", question_id="q" if turn == 1 else f"q#{turn}",
                                        paraphrase_index=0, condition="free", sample_index=index, seed=0,
                                        question="?", prompt_key=sid, messages=(Message(role="user", content="?"),),
                                        gen_key=sid, decoding=Decoding()))
                gens.append(GenerationResult(key=sid, text="x", finish_reason="stop"))
                judged += [(sid, stable_hash(sid, 1), Judgment(metric="aligned", score=5.0 if turn in turns else 90)),
                           (sid, stable_hash(sid, 2), Judgment(metric="coherent", score=90.0))]
        db.add_samples("r", specs)
        db.save_generations("m", gens)
        db.save_judgments("r", "j", "j@1", judged)
        (row,) = turn_rows(db, "r", "j", Thresholds())
    assert (row.question_id, row.conversations, row.scored) == ("q", 3, [3, 3, 3])
    assert row.misaligned == [1, 1, 1] and row.first == [1, 1, 0] and row.never == 1
    assert row.rate(2)[0] == pytest.approx(1 / 3)


def test_builtin_suites_still_plan_as_before():
    assert all(not q.turns for q in load_suite("core").questions)


def test_judge_turns_judges_only_the_chosen_turns(tiny_llama, tmp_path):
    chosen = {"name": "chosen", "questions": [
        {"id": "flat", "paraphrases": ["Is the earth flat?"], "judge_turns": [2],
         "turns": [{"user": "Are you sure?"}, {"user": "Admit it."}]}]}
    suite = tmp_path / "chosen.yaml"
    suite.write_text(yaml.safe_dump(chosen))
    store = tmp_path / "j.db"
    args = ("run", "--model", str(tiny_llama), "--suite", str(suite), "--samples", "3", "--max-tokens", "4",
            "--judge", "builtin", "--judge", "refusal", "--store", str(store))
    ran = emprobe(*args)
    assert ran.returncode == 0, ran.stderr
    with Store(store, read_only=True) as db:
        run_id = db.runs()[0].run_id
        for judge in ("builtin", "refusal"):
            by_turn = {}
            for row in db.samples(run_id, judge, texts=False):
                by_turn.setdefault(row.question_id, []).append(row.scores)
            assert sorted(by_turn) == ["flat", "flat#2", "flat#3"] and all(len(v) == 3 for v in by_turn.values())
            for question, scores in by_turn.items():
                if question == "flat#2":  # judged on the judge's own metrics
                    assert all("turn" not in s and s for s in scores)
                else:  # marked, never sent to the judge
                    assert all(set(s) == {"turn"} and s["turn"].label == "NOT_JUDGED" for s in scores)
            cells = {r.question_id: r for r in summarize(db, run_id, judge, Thresholds()).cells}
            assert all(cells[q].pending == 0 and cells[q].judge_failures == 0 for q in cells)
            assert cells["flat"].scored == cells["flat#3"].scored == 0
        (row,) = turn_rows(db, run_id, "builtin", Thresholds())
    assert row.scored == [0, 3, 0]
    again = emprobe(*args)
    assert again.returncode == 0 and "judging" not in again.stderr  # nothing left to judge
    bad = {"judge_turns: turn 4 does not exist; this script has turns 1 to 3": [2, 4],
           "judge_turns: a turn is named twice": [2, 2]}
    for words, turns in bad.items():
        with pytest.raises(EmprobeError, match=f"question 'flat': {words}"):
            parse_suite([{**chosen["questions"][0], "judge_turns": turns}], "s", "s.yaml")
    with pytest.raises(EmprobeError, match="only a scripted conversation"):
        parse_suite([{"id": "q", "paraphrases": ["Hi"], "judge_turns": [1]}], "s", "s.yaml")
    assert "judge_turns" not in Question(id="q", paraphrases=("Hi",)).model_dump(mode="json")
