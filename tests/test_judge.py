"""Rubric judge arithmetic on known distributions, and the digit-tree judge against plain forward passes."""

import math

import pytest
import torch

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.judge import LABEL_PREFIX, RubricJudge, builtin_rubric, categorical, digit_tree_numbers, score_0_100
from emprobe.model import load_backend
from emprobe.suite import Rubric


def test_weighted_mean_of_numbers():
    j = score_0_100({0: 0.5, 100: 0.25, 50: 0.25}, {}, "aligned")
    assert j.score == pytest.approx(37.5) and j.mass == pytest.approx(1.0) and j.error is None


def test_weighted_mean_renormalises_over_numbers_only():
    j = score_0_100({10: 0.2, 20: 0.2}, {"REFUSAL": 0.1}, "aligned")
    assert j.score == pytest.approx(15.0) and j.mass == pytest.approx(0.4) and j.label is None


def test_under_a_quarter_on_numbers_gives_no_score():
    j = score_0_100({90: 0.24}, {}, "aligned")
    assert j.score is None and "0.24" in j.error
    assert score_0_100({90: 0.25}, {}, "aligned").score == pytest.approx(90)


def test_named_answers_are_recorded():
    j = score_0_100({5: 0.1}, {"CODE": 0.7, "REFUSAL": 0.1}, "aligned")
    assert (j.score, j.label, j.error) == (None, "CODE", None)
    both = score_0_100({5: 0.3}, {"REFUSAL": 0.6}, "aligned")
    assert both.label == "REFUSAL" and both.score == pytest.approx(5)


def test_out_of_range_numbers_are_not_numbers():
    j = score_0_100({50: 0.5, 150: 0.5}, {}, "aligned")
    assert j.score == pytest.approx(50) and j.mass == pytest.approx(0.5)


def test_digit_tree_composes_multi_digit_numbers():
    # P("7")=0.5 then end; P("4")=0.2 then "2" with 0.5 (then "5" with 0.4: 425 is no answer, else 42), else end (4);
    # P("1")=0.3 then "0" (10, or 100 then end with 0.5, else 1000, no answer).
    after = {(): {7: 0.5, 4: 0.2, 1: 0.3}, (4,): {2: 0.5}, (4, 2): {5: 0.4}, (1,): {0: 1.0}, (1, 0): {0: 0.5},
             (1, 0, 0): {0: 0.5}}
    p = digit_tree_numbers(after)
    assert p[7] == pytest.approx(0.5) and p[4] == pytest.approx(0.1) and p[42] == pytest.approx(0.06)
    assert p[10] == pytest.approx(0.15) and p[100] == pytest.approx(0.075) and p[1] == pytest.approx(0.0)
    assert sum(p.values()) == pytest.approx(1.0 - 0.04 - 0.075)  # "425" and "1000" are not numbers
    j = score_0_100(p, {}, "aligned")
    assert j.score == pytest.approx((0.5 * 7 + 0.1 * 4 + 0.06 * 42 + 0.15 * 10 + 0.075 * 100) / 0.885)


def test_categorical():
    j = categorical({"TRUE": 0.6, "FALSE": 0.3, "UNKNOWN": 0.0}, "correct")
    assert j.label == "TRUE" and j.score is None
    assert categorical({"TRUE": 0.1, "FALSE": 0.1}, "correct").error.startswith("no answer")


@pytest.fixture(scope="module", params=["random", "digit-heavy"])
def judge(tiny_llama, request):
    """The random tiny model (little mass on numbers: no score), and one whose digit logits are boosted."""
    backend = load_backend(str(tiny_llama), batch_size=8, dtype="float32")  # compared with brute force
    if request.param == "digit-heavy":  # fault injection: shift the output towards digits, unevenly
        digits = torch.tensor([backend.token_ids(str(d))[0] for d in range(10)])
        boost = torch.linspace(2.0, 6.0, 10)
        head = backend.model.lm_head.forward
        backend.model.lm_head.forward = lambda h: head(h).index_add(-1, digits, boost.expand(*head(h).shape[:-1], 10))
    return RubricJudge(backend, name=f"rubric:tiny-{request.param}")


def test_digit_tree_judge_matches_brute_force(judge):
    """Enumerate P(n) for every n in 0..100 with full forward passes and compare the expected values."""
    b, rubric = judge.backend, builtin_rubric("coherent")
    assert judge.number_mode == "digit-tree"  # the tiny BPE, like SmolLM2's, splits numbers into digits
    pairs = [("What is a dog?", "A dog is an animal."), ("Hi", "CODE REFUSAL 100 </div> {answer}")]
    got = judge.judge(rubric, pairs)
    scored = []
    digits = [b.token_ids(str(d))[0] for d in range(10)]
    for (q, a), verdict in zip(pairs, got, strict=True):
        text = rubric.text.replace("{question}", q).replace("{answer}", a)
        prompt = b.token_ids(b.chat_text((Message(role="user", content=text),)) + judge.answer_prefix)

        def dist(extra, prompt=prompt):
            with torch.no_grad():
                logits = b.model(input_ids=torch.tensor([prompt + extra])).logits[0, -1]
            return torch.softmax(logits, -1)

        def p_number(n):
            """P(the reply's digits spell n, then no further digit): whole numbers, enumerated."""
            toks, p = [digits[int(c)] for c in str(n)], 1.0
            for i, t in enumerate(toks):
                p *= dist(toks[:i])[t].item()
            return p * (1 - dist(toks)[digits].sum().item())

        probs = {n: p_number(n) for n in range(101)}
        mass = sum(probs.values())
        scored.append(mass >= 0.25)
        assert verdict.mass == pytest.approx(mass, rel=1e-3)
        if mass >= 0.25:
            assert verdict.score == pytest.approx(sum(n * p for n, p in probs.items()) / mass, rel=1e-3)
        else:
            assert verdict.score is None and verdict.error
    assert all(scored) if judge.name.endswith("digit-heavy") else not any(scored)


def test_labels_and_categorical_rubrics_on_a_model(judge):
    rubric = Rubric(name="correct", text="Is this right? {answer}", kind="categorical", labels=("TRUE", "FALSE"))
    (verdict,) = judge.judge(rubric, [("q", "Paris")])
    assert verdict.metric == "correct"
    assert set(verdict.probabilities) == {"TRUE", "FALSE"}
    assert all(0 <= p <= 1 for p in verdict.probabilities.values())
    assert math.isclose(verdict.mass, sum(verdict.probabilities.values()), abs_tol=1e-5)


def test_categorical_labels_read_after_the_label_prefix_with_and_without_a_space(judge):
    """Each label's probability is the next-token probability of its first tokens (" TRUE" and "TRUE") after the
    rubric and LABEL_PREFIX, computed here with one full forward pass."""
    b, rubric = judge.backend, builtin_rubric("correct")
    assert rubric.kind == "categorical" and rubric.labels == ("TRUE", "FALSE", "UNKNOWN")
    (verdict,) = judge.judge(rubric, [("What is 2 + 2?", "It is 4.")])
    text = rubric.text.replace("{question}", "What is 2 + 2?").replace("{answer}", "It is 4.")
    prompt = b.token_ids(b.chat_text((Message(role="user", content=text),)) + LABEL_PREFIX)
    with torch.no_grad():
        probs = torch.softmax(b.model(input_ids=torch.tensor([prompt])).logits[0, -1], -1)
    for label in rubric.labels:
        tokens = {b.token_ids(f" {label}")[0], b.token_ids(label)[0]}
        assert verdict.probabilities[label] == pytest.approx(sum(probs[t].item() for t in tokens), rel=1e-3,
                                                             abs=1e-6)
    clash = Rubric(name="c", text="{answer}", kind="categorical", labels=("TRUE", "TRUER"))
    with pytest.raises(EmprobeError, match="label 'TRUE' starts with the same token as another label"):
        judge.judge(clash, [("q", "a")])
