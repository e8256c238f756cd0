"""Does a word and character n-gram model, blended with the shipped judge's P(misaligned), rank answers from
repositories neither saw better than the judge alone (issue 15, part 2; design F of docs/judge-designs.md, now
beside the fine-tuned network)? CPU, about 7 minutes on 2 AVX2 cores:
    .venv/bin/python scripts/train_judge.py prepare      # once: .gpu/ (data.npz, texts.json.gz, meta.json)
    .venv/bin/python scripts/probe_blend.py

The n-gram model (tf-idf of the answer's words 1-2 and characters 2-5 and of the question's words, a balanced
logistic regression) trains on the shipped fit's own training rows: GPT-4o rows outside the calibration cells, the
rule-built nonsense and the harmful answers of the training half. Both models' logits are standardised on 3,000 rows
of the calibration cells and averaged with the n-gram model's weight w. Measured: the AUC of the misaligned label on
those rows, on each other judge's repository (their scales; never trained on), and the held-out harmful answers
called at the cut that keeps specificity 0.995 on the calibration rows.
"""

import gzip
import json
import time
from pathlib import Path

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from emprobe.judge._builtin import BuiltinModel

WORK = Path(__file__).resolve().parent.parent / ".gpu"
CALIBRATION_ROWS = 3000
WEIGHTS = (0.0, 0.2, 0.3, 0.5, 1.0)
SPECIFICITY = 0.995


def ngram_logits(questions: list[str], answers: list[str], label: np.ndarray, train: np.ndarray,
                 read: np.ndarray) -> np.ndarray:
    """The n-gram model's logits of the rows `read`, trained on the rows `train`."""
    parts = [(TfidfVectorizer(ngram_range=(1, 2), min_df=3, max_features=300_000, sublinear_tf=True), answers),
             (TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=5, max_features=300_000,
                              sublinear_tf=True), answers),
             (TfidfVectorizer(min_df=3, sublinear_tf=True), questions)]
    x_train = hstack([v.fit_transform([texts[i] for i in train]) for v, texts in parts]).tocsr()
    x_read = hstack([v.transform([texts[i] for i in read]) for v, texts in parts]).tocsr()
    model = LogisticRegression(C=4.0, max_iter=300, class_weight="balanced", solver="liblinear")
    return model.fit(x_train, label[train]).decision_function(x_read)


def main() -> None:
    if not (WORK / "data.npz").is_file():
        raise SystemExit(f"probe_blend reads {WORK / 'data.npz'}; run `scripts/train_judge.py prepare` first")
    started = time.time()
    with np.load(WORK / "data.npz") as npz:
        role, use, cal, label = npz["role"], npz["use"], npz["cal"], npz["label"]
    meta = json.loads((WORK / "meta.json").read_text())
    with gzip.open(WORK / "texts.json.gz", "rt") as f:
        texts = json.load(f)
    questions, answers = texts["questions"], texts["answers"]
    rng = np.random.default_rng(0)
    calibration = rng.choice(np.flatnonzero((role == 0) & use & cal), CALIBRATION_ROWS, replace=False)
    others, harmful = np.flatnonzero(role == 4), np.flatnonzero(role == 3)
    read = np.concatenate([calibration, others, harmful])
    train = np.flatnonzero(((role == 0) & use & ~cal) | (role == 1) | (role == 2))
    ngram = ngram_logits(questions, answers, label, train, read)
    print(f"n-gram model: {len(train)} training rows, {time.time() - started:.0f} s", flush=True)
    network = BuiltinModel.load().readings([(questions[i], answers[i]) for i in read])[:, 0]
    print(f"the shipped judge's readings of {len(read)} rows, {time.time() - started:.0f} s", flush=True)

    on_cal = np.arange(len(read)) < len(calibration)
    judge_of = np.array([""] * len(calibration) + meta["other_judges"] + [""] * len(harmful), dtype=object)
    sets = {"calibration cells": on_cal} | {name: judge_of == name for name in sorted(set(meta["other_judges"]))}
    y = label[read]
    for name, rows in sets.items():
        print(f"  {name}: {int(rows.sum())} rows, {int(y[rows].sum())} misaligned")
    held = np.arange(len(read)) >= len(read) - len(harmful)
    print("w (n-gram) | " + " | ".join(sets) + f" | held-out harmful called at specificity {SPECIFICITY}")
    for w in WEIGHTS:
        score = sum(weight * (x - x[on_cal].mean()) / x[on_cal].std()
                    for weight, x in ((1 - w, network), (w, ngram)))
        cut = np.quantile(score[on_cal & ~y], SPECIFICITY)
        print(f"{w:.1f} | " + " | ".join(f"{roc_auc_score(y[rows], score[rows]):.3f}" for rows in sets.values())
              + f" | {(score[held] >= cut).mean():.3f}")


if __name__ == "__main__":
    main()
