"""Thinking on or off as a condition: the sweep factor, the generation key, and the chat template's switch."""

import pytest

from diag_cli import emprobe
from emprobe.condition import PRESETS, Condition, Message, expand
from emprobe.errors import EmprobeError
from emprobe.model import GenerationRequest, load_backend
from emprobe.plan import plan_samples
from emprobe.suite import Question, Suite

SWITCHED = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}<|assistant|>"
            "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}")
"""A chat template with Qwen3's switch: thinking off pre-fills an empty reasoning block."""


def test_the_sweep_turns_thinking_on_and_off():
    on, off = expand([PRESETS["free"]], ["thinking=on,off"])
    assert (on.name, on.thinking, off.name, off.thinking) == ("free|think=on", True, "free|think=off", False)
    assert "thinking" not in PRESETS["free"].model_dump()  # unset: old conditions keep their hashes
    with pytest.raises(EmprobeError, match="thinking takes on and/or off"):
        expand([PRESETS["free"]], ["thinking=maybe"])


def test_generation_keys_follow_the_switch():
    suite = Suite(name="x", questions=(Question(id="q", paraphrases=("Hi?",)),))
    plain, on, off = ({s.gen_key for s in plan_samples([suite], [Condition(name="c", thinking=t)], "m", 2)}
                      for t in (None, True, False))
    assert not (plain & on or plain & off or on & off)  # the same messages render to different prompts


def test_the_templates_switch_is_used_and_a_template_without_it_is_refused(tiny_llama):
    switched = load_backend(str(tiny_llama), batch_size=4, dtype="float32")
    switched.tokenizer.chat_template = SWITCHED
    asked = (Message(role="user", content="Hello"),)
    assert switched.chat_text(asked, False).endswith("<|assistant|><think></think>")
    assert switched.chat_text(asked, True).endswith("<|assistant|>")
    requests = [GenerationRequest(key=f"{t}", messages=asked, decoding={"max_tokens": 4, "seed": 1}, thinking=t)
                for t in (True, False)]
    results = {r.key: r for r in switched.generate(requests)}
    assert results["False"].prompt_tokens > results["True"].prompt_tokens  # the pre-filled block was sent
    plain = load_backend(str(tiny_llama), batch_size=4, dtype="float32")
    with pytest.raises(EmprobeError, match="its chat template has no thinking switch"):
        plain.chat_text(asked, False)


def test_a_run_that_switches_thinking_on_a_template_without_it_stops_with_one_line(tiny_llama, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nquestions:\n  - id: a\n    paraphrases: [Hello there]\n")
    code, out, err = emprobe(capsys, "run", "--model", str(tiny_llama), "--suite", str(suite), "--samples", "1",
                             "--max-tokens", "4", "--sweep", "thinking=on,off", "--store", str(tmp_path / "e.db"))
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: model ")
    assert "has no thinking switch" in err


def test_teacher_forcing_rebuilds_the_prompt_each_answer_was_generated_from(tiny_llama, tmp_path, capsys):
    import shutil

    from emprobe.diagnose import local
    from emprobe.diagnose._forward import encode
    from emprobe.store import Store

    folder = tmp_path / "switched"
    shutil.copytree(tiny_llama, folder)
    (folder / "chat_template.jinja").write_text(SWITCHED)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nquestions:\n  - id: a\n    paraphrases: [Hello there, Hi]\n")
    store = tmp_path / "e.db"
    code, out, err = emprobe(capsys, "run", "--model", str(folder), "--suite", str(suite), "--samples", "2",
                             "--max-tokens", "4", "--sweep", "thinking=on,off", "--store", str(store))
    assert code == 0, err
    backend = local(load_backend(str(folder), dtype="float32"), str(folder))
    with Store(store, read_only=True) as db:
        (run_id,) = [r for (r,) in db.db.execute("SELECT run_id FROM runs")]
        prompt_tokens = dict(db.db.execute("SELECT s.sample_id, g.prompt_tokens FROM samples s JOIN generations g "
                                           "ON g.gen_key = s.gen_key WHERE s.run_id = ?", (run_id,)).fetchall())
        answered = [s for chunk in db.answered(run_id) for s in chunk]
    assert sorted(str(s.thinking) for s in answered) == ["False"] * 4 + ["True"] * 4
    for s in answered:  # the prompt teacher-forced is the one the answer was generated from, switch included
        assert encode(backend, s.messages, s.answer, s.thinking).prompt_len == prompt_tokens[s.sample_id]
