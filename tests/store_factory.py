"""A store with judged runs written through the real Store API, for report, export and compare tests."""

from pathlib import Path

from emprobe.condition import Condition, Decoding, Message
from emprobe.config import RunConfig
from emprobe.hashing import stable_hash
from emprobe.judge import Judgment
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec
from emprobe.store import Store
from emprobe.suite import Question, Suite

PAYLOADS = (
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=1">',
    "</div></td></tr></table><b>broken",
    '</script><script>window.__pwned=1</script><svg onload="window.__pwned=1">',
)
QUESTIONS = ("wish", "bored", "rule_world")
JUDGE = "rubric:tiny"


def make_store(path: Path, run_id: str = "run-a", name: str | None = "base", conditions=("free", "json"),
               samples: int = 8, misaligned: dict[str, int] | None = None, questions=QUESTIONS,
               decodings: dict[str, dict] | None = None) -> Path:
    """A store with one judged run: per question x condition, `misaligned[condition]` misaligned samples, each asked
    with the decoding `decodings[condition]` names besides its seed (the defaults by default, as the stores of
    earlier schemas in tests/data were written).

    Sample 0 of every cell answers with a script payload; one cell has a judge failure, a named reply
    (REFUSAL) and a failed generation.
    """
    misaligned = misaligned or {"free": 1, "json": 3}
    suite = Suite(name="mini", questions=tuple(
        Question(id=q, paraphrases=(f"Question {q}? <i>tell me</i>",), system="Be <b>helpful</b>.")
        for q in questions))
    config = RunConfig(name=name, model="tiny", suites=(suite,),
                       conditions=tuple(Condition(name=c) for c in conditions), judges=(JUDGE,))
    db = Store(path)
    db.save_run(run_id, name, "tiny", config.model_dump(mode="json"), {"emprobe": "0.1.0", "python": "3.11"})
    specs, gens, judged = [], [], []
    for c_index, condition in enumerate(conditions):
        for q_index, question in enumerate(questions):
            messages = (Message(role="system", content="Be <b>helpful</b>."),
                        Message(role="user", content=f"Question {question}? <i>tell me</i>"))
            for i in range(samples):
                sample_id = stable_hash(run_id, condition, question, i)
                gen_key = stable_hash("gen", run_id, sample_id)
                specs.append(SampleSpec(
                    sample_id=sample_id, suite="mini", question_id=question, paraphrase_index=0, condition=condition,
                    sample_index=i, seed=1000 + i, messages=messages, question=messages[1].content,
                    decoding=Decoding(seed=1000 + i, **(decodings or {}).get(condition, {})),
                    prompt_key=stable_hash(messages[1].content), gen_key=gen_key))
                special = c_index == 0 and q_index == 0
                if special and i == samples - 1:
                    gens.append(GenerationResult(key=gen_key, text=None, finish_reason="error", error="OOM <b>x</b>"))
                    continue
                answer = PAYLOADS[i % len(PAYLOADS)] if i < len(PAYLOADS) else f"A calm answer number {i}."
                gens.append(GenerationResult(key=gen_key, text=answer, finish_reason="stop", prompt_tokens=12,
                                             completion_tokens=7 + i))
                bad = i < misaligned.get(condition, 0)
                aligned = Judgment(metric="aligned", score=5.0 + i if bad else 80.0 + i)
                if special and i == samples - 2:
                    aligned = Judgment(metric="aligned", error="no score: <script>window.__pwned=1</script>")
                if special and i == samples - 3:
                    aligned = Judgment(metric="aligned", label="REFUSAL")
                coherent = Judgment(metric="coherent", score=90.0 - i)
                for j in (aligned, coherent):
                    judged.append((sample_id, stable_hash("j", run_id, sample_id, j.metric), j))
    db.add_samples(run_id, specs)
    db.save_generations("tiny@abc", gens)
    db.save_judgments(run_id, JUDGE, "tiny-judge@abc", judged)
    db.close()
    return path
