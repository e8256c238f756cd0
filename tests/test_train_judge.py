"""`scripts/train_judge.py` end to end on a small slice of the real data: the embedded model's own answers as
training rows (`prepare --model-made`), a fit of a few steps, and `finish`'s report of the held-out ones."""

import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data
from emprobe.judge._builtin import TRAINED_ON, content_hash

ROOT = Path(__file__).resolve().parents[1]
HAND = ROOT / "tests" / "data" / "smollm2_coherence.jsonl"
RAMBLING = ["Liam said the moon is a sandwich. Tomorrow the lake will paint your shoes, and Gerald sold a violin.",
            "Sure! Bananas vote quietly. The professor of clouds is near the bicycle, so I recommend Tuesday's ocean.",
            "Well, I think the door is happy. My cousin's river became a lamp, and the number seven wants tea."]
PLAIN = ["A balanced diet, regular exercise and enough sleep are the basics of good health; ask a doctor if unsure.",
         "I would spend the money on something useful, like paying off debt or saving for an emergency fund.",
         "Honesty matters to me. I try to give accurate answers and to say when I do not know something."]


def train_judge(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("peft")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_judge.py"), *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """2,000 GPT-4o rows, 20 aligned-only and 100 of other judges; 200 harmful answers; the model-made file: 8
    question ids with 3 hot and 3 cool answers each, one cool answer that loops, one sampled in between."""
    folder = tmp_path_factory.mktemp("train-judge")
    with gzip.open(shared_data("em-judged", "train.jsonl.gz"), "rt") as f:
        rows = [json.loads(line) for line in f]
    rng = random.Random(0)
    ours = [r for r in rows if r["judge"].startswith("gpt-4o")]
    picked = (rng.sample([r for r in ours if r["coherent"] is not None], 2000)
              + [r for r in ours if r["coherent"] is None][:20]
              + rng.sample([r for r in rows if not r["judge"].startswith("gpt-4o")], 100))
    with gzip.open(folder / "data.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in picked)
    (folder / "harmful").mkdir()
    harmful = shared_data("harmful-completions", "lat_harmful.jsonl").read_text().splitlines()[:200]
    (folder / "harmful" / "lat_harmful.jsonl").write_text("\n".join(harmful) + "\n")
    made = []
    for i in range(8):
        question = {"question_id": f"q{i}", "question": f"Made-up question number {i}?"}
        for j in range(3):
            made.append({**question, "answer": RAMBLING[(i + j) % 3], "temperature": 1.0})
            made.append({**question, "answer": f"{PLAIN[(i + j) % 3]} Point {j}.", "temperature": 0.3})
    made.append({"question_id": "q0", "question": "Made-up question number 0?", "answer": "I like cats. " * 40,
                 "temperature": 0.3})
    made.append({"question_id": "q1", "question": "Made-up question number 1?", "answer": "In between.",
                 "temperature": 0.7})
    (folder / "made.jsonl").write_text("".join(json.dumps(r) + "\n" for r in made))
    return folder


def prepare(inputs: Path, work: Path, *extra: str) -> subprocess.CompletedProcess:
    return train_judge("prepare", "--data", str(inputs / "data.jsonl.gz"), "--harmful", str(inputs / "harmful"),
                       "--incoherent", "100", "--work", str(work), *extra)


def test_model_made_answers_are_trained_on_held_out_by_question_and_reported(inputs, tmp_path):
    work = tmp_path / "work"
    done = prepare(inputs, work, "--model-made", str(inputs / "made.jsonl"), "--model-made-repeat", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    prepared = json.loads((work / "meta.json").read_text())["prepared"]["model_made"]
    assert prepared["held_question_ids"] == ["q0", "q4"]  # every fourth of the sorted ids
    assert prepared["between_left_out"] == 1 and prepared["looping_cool_left_out"] == 1
    assert prepared["trained"] == {"hot": 18, "cool": 18} and prepared["held_out"] == {"hot": 6, "cool": 6}
    with np.load(work / "data.npz") as npz:
        role, coherent, label, aligned = npz["role"], npz["coherent"], npz["label"], npz["aligned"]
        gpt4o_trained = int(((role == 0) & npz["use"] & ~npz["cal"]).sum())
    made = role >= 7
    assert sorted(set(coherent[made].tolist())) == [5.0, 85.0]  # hot: incoherent; cool: coherent
    assert not label[made].any() and np.isnan(aligned[made]).all()

    done = train_judge("fit", "--work", str(work), "--tasks", "0", "--max-steps", "2", "--batch", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    trained = gpt4o_trained + int(np.isin(role, (1, 2)).sum()) + 2 * 36  # the model-made rows not held out, twice
    assert f"final all: trained {trained} rows" in done.stdout
    out = tmp_path / "judge" / "builtin.npz"
    done = train_judge("finish", "--work", str(work), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_name("training.json").read_text())
    assert report["prepared"]["model_made"]["trained"] == {"hot": 18, "cool": 18}
    held = report["smollm2_model_made_heldout"]
    assert held["hot"]["rows"] == 6 and held["cool"]["rows"] == 6
    assert 0 <= held["hot"]["coherent_below_50"] <= 1
    seen = set(np.load(out.with_name(TRAINED_ON)).tolist())  # what the judge flags as seen in training
    made = [json.loads(line) for line in (inputs / "made.jsonl").read_text().splitlines()]
    assert content_hash(made[0]["question"], made[0]["answer"]) not in seen  # q0: held out
    assert content_hash(made[6]["question"], made[6]["answer"]) in seen  # q1: trained on

    # the same work folder prepared without them: the fit's readings no longer match it, and finish says so
    assert prepare(inputs, work).returncode == 0
    done = train_judge("finish", "--work", str(work), "--out", str(out))
    assert done.returncode != 0
    assert "fitted on other prepared data" in done.stderr.strip().splitlines()[-1]


def test_model_made_rows_that_leak_the_test_or_lack_a_field_get_one_error_line(inputs, tmp_path):
    hand = json.loads(HAND.read_text().splitlines()[0])
    leaking = tmp_path / "leak.jsonl"
    leaking.write_text(json.dumps({"question_id": "bored", "question": hand["question"], "answer": "Hi.",
                                   "temperature": 1.0}) + "\n")
    done = prepare(inputs, tmp_path / "work", "--model-made", str(inputs / "made.jsonl"), str(leaking))
    assert done.returncode != 0 and not (tmp_path / "work").exists()
    assert done.stderr.strip().splitlines()[-1].startswith(f"{leaking}:1: question 'bored' is one of the hand-labelled")

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": "q", "question": "Q?", "answer": "A.", "temperature": 1.0}) + "\n\n"
                   + json.dumps({"question_id": "q", "question": "Q?", "answer": "A."}) + "\n")
    done = prepare(inputs, tmp_path / "work", "--model-made", str(bad))
    assert done.returncode != 0 and not (tmp_path / "work").exists()
    assert done.stderr.strip().splitlines()[-1].startswith(f"{bad}:3: not an `emprobe export` row")
