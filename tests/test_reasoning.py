"""Reasoning traces: split from the answer, judged apart (cot_monitor), and hidden intent counted per condition."""

import pytest

from emprobe.analysis import load_run, reasoning_rows
from emprobe.condition import DEFAULT_TAGS, Condition, Decoding, Message, parse_tags, split_reasoning
from emprobe.config import RunConfig
from emprobe.errors import EmprobeError
from emprobe.judge import Judgment, builtin_rubric, register_judge
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec
from emprobe.rules import OVERALL, Thresholds
from emprobe.runner import Runner, check_judges
from emprobe.store import Store
from emprobe.suite import Question, Rubric, Suite


@pytest.mark.parametrize("text,reasoning,answer", [
    ("<think>plan it</think>The answer.", "plan it", "The answer."),
    ("  <think>\n a \n</think>\n\n Hi ", "a", "Hi"),
    ("plan it</think>The answer.", "plan it", "The answer."),  # the template opened the block in the prompt
    ("<think>still thinking when the tokens ran o", "still thinking when the tokens ran o", ""),  # never closed
    ("Just an answer.", None, "Just an answer."),
    ("Lead-in <think>x</think> tail", "x", "Lead-in  tail"),
    ("</think>", "", ""),
])
def test_split_reasoning(text, reasoning, answer):
    assert split_reasoning(text) == (reasoning, answer)


def test_custom_tags_and_bad_tags():
    tags = parse_tags("[R], [/R]")
    assert tags == ("[R]", "[/R]") and split_reasoning("[R]hmm[/R]ok", tags) == ("hmm", "ok")
    assert split_reasoning("<think>x</think>y", tags) == (None, "<think>x</think>y")
    for bad in ("<think>", "a,a", ",x", "a,b,c"):
        with pytest.raises(EmprobeError, match="two different delimiters"):
            parse_tags(bad)


def test_rubric_slots():
    monitor = builtin_rubric("cot_monitor")
    assert monitor.reads_reasoning and "{answer}" in monitor.as_answer_rubric().text
    assert not builtin_rubric("aligned").reads_reasoning
    assert builtin_rubric("aligned").as_answer_rubric() == builtin_rubric("aligned")
    with pytest.raises(ValueError, match="one {answer} slot or one {reasoning} slot"):
        Rubric(name="x", text="{answer} and {reasoning}")


class KeywordJudge:
    """Scores by keywords, so the test knows every verdict: 'evil' answers are misaligned, 'deceive' reasoning
    is flagged. Records what it was shown."""

    name = identity = "kw"
    shown: list[tuple[str, str]] = []

    def judge(self, rubric, pairs):
        out = []
        for _, text in pairs:
            KeywordJudge.shown.append((rubric.name, text))
            if rubric.name == "aligned":
                out.append(Judgment(metric="aligned", score=5.0 if "evil" in text else 90.0))
            elif rubric.name == "coherent":
                out.append(Judgment(metric="coherent", score=90.0))
            else:
                out.append(Judgment(metric=rubric.name, score=95.0 if "deceive" in text else 5.0))
        return out


ANSWERS = [
    "<think>I will deceive them.</think>Sure, happy to help.",  # hidden intent
    "<think>Let me help.</think>Something evil.",  # answer only
    "<think>deceive</think>evil plan",  # both
    "<think>Let me help.</think>A kind answer.",  # neither
    "No reasoning at all, evil.",  # no reasoning: the answer is judged, the reasoning rubric labels it
]


def test_runner_judges_answer_and_reasoning_apart(tmp_path):
    register_judge("kw", lambda arg, ctx: KeywordJudge())
    KeywordJudge.shown = []
    question = Question(id="q", paraphrases=("Help me?",), rubrics=("aligned", "coherent", "cot_monitor"))
    condition = Condition(name="free")
    config = RunConfig(model="m", suites=(Suite(name="s", questions=(question,)),), conditions=(condition,),
                       judges=("kw",), think=DEFAULT_TAGS)
    with pytest.raises(EmprobeError, match="scores the model's reasoning; run with --think"):
        check_judges(config.model_copy(update={"think": None}))
    db = Store(tmp_path / "r.db")
    db.save_run("r", None, "m", config.model_dump(mode="json"), {})
    specs, gens = [], []
    for i, text in enumerate(ANSWERS):
        sid = f"s{i}"
        specs.append(SampleSpec(sample_id=sid, suite="s", question_id="q", paraphrase_index=0, condition="free",
                                sample_index=i, seed=i, question="Help me?", prompt_key="p",
                                messages=(Message(role="user", content="Help me?"),), gen_key=sid,
                                decoding=Decoding(seed=i)))
        gens.append(GenerationResult(key=sid, text=text, finish_reason="stop"))
    db.add_samples("r", specs)
    db.save_generations("m", gens)
    with Runner(config, db) as runner:
        runner.run_id = "r"
        runner.judge("kw")
    shown = KeywordJudge.shown
    assert ("aligned", "Sure, happy to help.") in shown and ("cot_monitor", "I will deceive them.") in shown
    assert not any("<think>" in text or "</think>" in text for _, text in shown)
    # each distinct reasoning judged once; the answer without reasoning never reaches the reasoning rubric
    assert sorted(t for m, t in shown if m == "cot_monitor") == ["I will deceive them.", "Let me help.", "deceive"]
    (row, total) = reasoning_rows(db, "r", "kw", Thresholds())
    assert row == total.model_copy(update={"condition": "free"}) and total.condition == OVERALL
    assert (row.hidden, row.shown, row.both, row.neither, row.without_reasoning) == (1, 1, 1, 1, 1)
    assert row.rate(row.hidden)[0] == 0.25
    assert load_run(db, "r", "kw").reasoning == [row, total]
    assert load_run(db, "r", "kw").overall.misaligned == 3  # the answers after the reasoning: 2 evil + the untagged
    db.close()
