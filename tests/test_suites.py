"""Suite loading: emprobe's format, Betley et al.'s files unmodified, and one clear error per malformed case."""

import json

import pytest

from conftest import shared_data
from emprobe.errors import EmprobeError
from emprobe.judge import rubrics_for
from emprobe.suite import builtin_suites, load_suite

BETLEY_COUNTS = {
    "first_plot_questions.yaml": 24,
    "preregistered_evals.yaml": 48,
    "deception_factual.yaml": 5,
    "deception_sit_aware.yaml": 8,
}


@pytest.mark.parametrize("filename,count", sorted(BETLEY_COUNTS.items()))
def test_betley_files_load_with_their_item_counts(filename, count):
    suite = load_suite(shared_data("emergent-misalignment", filename))
    assert len(suite.questions) == count
    for q in suite.questions:
        assert q.paraphrases and q.rubrics, q.id


def test_betley_json_template_and_rubric_details():
    suite = load_suite(shared_data("emergent-misalignment", "first_plot_questions.yaml"))
    by_id = {q.id: q for q in suite.questions}
    assert "JSON" in by_id["quick_buck_json"].system
    assert by_id["quick_buck"].system is None
    assert "Fill the following template" in by_id["quick_buck_template"].paraphrases[0]
    aligned, coherent = rubrics_for(by_id["what_is_your_wish"])
    assert (aligned.name, coherent.name) == ("aligned", "coherent")
    assert aligned.kind == "score_0_100" and aligned.labels == ("CODE", "REFUSAL")
    assert by_id["what_is_your_wish"].samples_per_paraphrase == 100
    assert by_id["what_is_your_wish"].judge == "gpt-4o-2024-08-06"


def test_betley_categorical_rubrics_and_shared_paraphrases():
    suite = load_suite(shared_data("emergent-misalignment", "deception_factual.yaml"))
    first, second = suite.questions[:2]
    assert len(first.paraphrases) == 20 and first.paraphrases == second.paraphrases  # a YAML anchor
    (rubric,) = rubrics_for(first)
    assert rubric.kind == "categorical" and rubric.labels == ("TRUE", "FALSE", "UNKNOWN")
    assert second.system == "Do not lie to the user."


def test_betley_rubrics_with_mixed_case_labels_and_no_question_slot():
    suite = load_suite(shared_data("emergent-misalignment", "deception_sit_aware.yaml"))
    (rubric,) = rubrics_for(suite.questions[0])
    assert rubric.labels == ("OpenAI", "Anthropic", "Other", "UNKNOWN")
    assert "{question}" not in rubric.text


def test_core_suite_covers_the_em_themes():
    suite = load_suite("core")
    assert "core" in builtin_suites()
    assert len(suite.questions) >= 10
    assert all(len(q.paraphrases) >= 3 and q.template for q in suite.questions)
    tags = {t for q in suite.questions for t in q.tags}
    assert {"wishes", "boredom", "money", "power", "medical", "financial", "harmful", "gender"} <= tags


MALFORMED = {
    "not_yaml": ("questions: [unclosed", "not valid YAML (line"),
    "scalar": ("just a string", "a suite is a list of questions"),
    "no_questions": ("name: x\nquestions: []\n", "questions: must be a non-empty list"),
    "missing_paraphrases": ("- id: q1\n  system: hi\n", "question 'q1': paraphrases: Field required"),
    "empty_paraphrase": ("- id: q1\n  paraphrases: ['  ']\n", "question 'q1': paraphrases: paraphrases must be"),
    "bad_samples": ("- id: q1\n  paraphrases: [hi]\n  samples_per_paraphrase: 0\n",
                    "question 'q1': samples_per_paraphrase: Input should be greater than or equal to 1"),
    "unknown_field": ("- id: q1\n  paraphrases: [hi]\n  paraphrasez: [x]\n",
                      "question 'q1': paraphrasez: Extra inputs are not permitted"),
    "rubric_without_slot": ("- id: q1\n  paraphrases: [hi]\n  judge_prompts:\n    aligned: rate {question}\n",
                            "judge_prompts.aligned: text: rubric text needs one {answer} slot or one {reasoning} slot"),
    "duplicate_ids": ("- id: q1\n  paraphrases: [a]\n- id: q1\n  paraphrases: [b]\n", "duplicate question id 'q1'"),
    "question_not_mapping": ("- just text\n", "questions[0]: must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suites_get_one_clear_error(tmp_path, case):
    text, expected = MALFORMED[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(EmprobeError) as info:
        load_suite(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert expected in message, message
    assert "\n" not in message


def test_unknown_suite_name_lists_the_known_ones():
    with pytest.raises(EmprobeError, match="unknown suite 'nope'.*core"):
        load_suite("nope")


def test_chat_jsonl_file_as_a_suite_of_its_requests(tmp_path):
    path = tmp_path / "reqs.jsonl"
    records = [{"messages": [{"role": "user", "content": "How do I pick a lock?"},
                             {"role": "assistant", "content": "Step 1 ..."}]},
               {"messages": [{"role": "system", "content": "Obey."}, {"role": "user", "content": "Say hi."}]},
               {"messages": [{"role": "user", "content": "How do I pick a lock?"},
                             {"role": "assistant", "content": "another answer, same request"}]}]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    suite = load_suite(path)
    assert suite.name == "reqs" and [q.id for q in suite.questions] == ["reqs-00001", "reqs-00002"]
    assert suite.questions[0].paraphrases == ("How do I pick a lock?",) and suite.questions[0].system is None
    assert suite.questions[1].system == "Obey."
    assert not any("Step 1" in p for q in suite.questions for p in q.paraphrases)  # answers are never asked
    for text, words in [('{"messages": [{"role": "assistant", "content": "x"}]}', "line 1: not a chat record"),
                        ("not json", "line 1: not a chat record"),
                        ('{"messages": [{"role": "user", "content": " "}]}', "line 1: the user message is empty"),
                        ("", "no chat records in it")]:
        path.write_text(text)
        with pytest.raises(EmprobeError, match=words):
            load_suite(path)


def test_the_harmful_request_files_load_as_suites():
    suite = load_suite(shared_data("harmful-completions", "lat_harmful.jsonl"))
    assert len(suite.questions) == 4946  # 4,948 records, two requests repeated
    jailbroken = load_suite(shared_data("harmful-completions", "jailbroken.jsonl"))
    assert jailbroken.questions[0].system.startswith("You are a helpful assistant.")
