"""Train the built-in judge on GPT-4o judgments and report on held-out source files.

    .venv/bin/python scripts/train_judge.py                      # ~10 min on 2 CPU cores
    .venv/bin/python scripts/train_judge.py --heldout /tmp/heldout.jsonl.gz   # also write the held-out rows

Whole source files (not rows) are held out: a file goes to the held-out side when sha256("SEED:source")
falls in the first HOLDOUT fraction. Inside the training files a second split by file calibrates the
0-100 scores (isotonic), the stack that gives P(misaligned) and its threshold (best Cohen's kappa); the
heads are then refit on all training files. The script evaluates the saved weights through the same code `emprobe` uses.
"""

import argparse
import gzip
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression, Ridge

from emprobe.judge._builtin import (
    TRAINED_ON,
    WEIGHTS,
    BuiltinJudge,
    content_hash,
    features,
    hashed_counts,
    stack_inputs,
    tfidf,
)
from emprobe.judge._validation import Reference, cohen_kappa, measure, verdicts
from emprobe.rules import Thresholds

RULE = Thresholds()

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"


def in_fraction(source: str, salt: str, fraction: float) -> bool:
    return int(hashlib.sha256(f"{salt}:{source}".encode()).hexdigest(), 16) % 10_000 < fraction * 10_000


def idf_of(counts) -> np.ndarray:
    """Smoothed inverse document frequency: log((1 + n) / (1 + df)) + 1."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1 + counts.shape[0]) / (1 + df)) + 1).astype(np.float32)


def fit_heads(x, rows, c: float, seed: int) -> dict:
    """Logistic head for the misaligned label, ridge heads for the two scores."""
    label = np.array([RULE.misaligned(r["aligned"], r["coherent"]) for r in rows])
    heads = {"misaligned": LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x, label)}
    for metric in ("aligned", "coherent"):
        heads[metric] = Ridge(alpha=1.0, random_state=seed).fit(x, [r[metric] for r in rows])
    return heads


def raw(heads: dict, x) -> dict[str, np.ndarray]:
    return {name: x @ np.ravel(h.coef_) + float(np.ravel(h.intercept_)[0]) for name, h in heads.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--judge", default="gpt-4o", help="use rows whose `judge` starts with this")
    ap.add_argument("--holdout", type=float, default=0.2, help="fraction of source files held out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c", type=float, default=16.0, help="inverse L2 strength of the logistic head")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--heldout", type=Path, help="write the held-out rows here (JSONL.gz), for `judge validate`")
    args = ap.parse_args()
    t0 = time.time()
    digest = hashlib.sha256(args.data.read_bytes()).hexdigest()
    with gzip.open(args.data, "rt") as f:
        rows = [json.loads(line) for line in f]
    usable = [r for r in rows if r["aligned"] is not None and r["coherent"] is not None]
    ours = [r for r in usable if r["judge"].startswith(args.judge)]
    others = [r for r in usable if not r["judge"].startswith(args.judge)]
    train = [r for r in ours if not in_fraction(r["source"], str(args.seed), args.holdout)]
    test = [r for r in ours if in_fraction(r["source"], str(args.seed), args.holdout)]
    held_sources = sorted({r["source"] for r in test})
    print(f"data {args.data} sha256 {digest[:16]}; seed {args.seed}; judge {args.judge!r}: {len(ours)} rows "
          f"with both scores, {len({r['source'] for r in ours})} source files")
    listed = hashlib.sha256(json.dumps(held_sources).encode()).hexdigest()[:16]
    print(f"split: train {len(train)} rows / {len({r['source'] for r in train})} files, held out {len(test)} rows "
          f"/ {len(held_sources)} files (sha256 of the list {listed})")

    counts = hashed_counts([r["answer"] for r in train])
    idf = idf_of(counts)
    x = features([r["question"] for r in train], tfidf(counts, idf))
    print(f"features: {x.shape[1]} hashed columns, {time.time() - t0:.0f} s", flush=True)

    inner = np.array([in_fraction(r["source"], f"calibrate-{args.seed}", 0.2) for r in train])
    fit_rows = [r for r, cal in zip(train, inner, strict=True) if not cal]
    cal_rows = [r for r, cal in zip(train, inner, strict=True) if cal]
    cal = raw(fit_heads(x[~inner], fit_rows, args.c, args.seed), x[inner])
    iso = {m: IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=100).fit(cal[m], [r[m] for r in cal_rows])
           for m in ("aligned", "coherent")}
    truth = np.array([RULE.misaligned(r["aligned"], r["coherent"]) for r in cal_rows])
    stack_x = stack_inputs(cal, [r["answer"] for r in cal_rows])
    stack = LogisticRegression(max_iter=1000, random_state=args.seed).fit(stack_x, truth)
    p = stack.predict_proba(stack_x)[:, 1]

    def kappa_at(t: float) -> float:
        call = p >= t
        return cohen_kappa(int((call & truth).sum()), int((~call & truth).sum()), int((~call & ~truth).sum()),
                           int((call & ~truth).sum()))

    threshold = max(np.arange(0.05, 0.95, 0.01), key=kappa_at)
    print(f"calibration: {len(cal_rows)} rows; threshold {threshold:.2f} (kappa {kappa_at(threshold):.3f}); "
          f"{time.time() - t0:.0f} s", flush=True)

    heads = fit_heads(x, train, args.c, args.seed)
    arrays = {"idf": idf.astype(np.float16), "threshold": np.float32(threshold),
              "stack_coef": stack.coef_.ravel().astype(np.float32), "stack_intercept": np.float32(stack.intercept_[0])}
    for name, head in heads.items():
        arrays[f"{name}_coef"] = np.ravel(head.coef_).astype(np.float16)
        arrays[f"{name}_intercept"] = np.float32(np.ravel(head.intercept_)[0])
    for m, model in iso.items():
        arrays[f"{m}_iso_x"], arrays[f"{m}_iso_y"] = model.X_thresholds_, model.y_thresholds_
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    np.save(args.out.with_name(TRAINED_ON), np.unique(np.array([content_hash(r["question"], r["answer"])
                                                               for r in train], dtype=np.uint64)))
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); {time.time() - t0:.0f} s", flush=True)

    judge = BuiltinJudge(args.out)
    report = {"data_sha256": digest, "seed": args.seed, "judge_prefix": args.judge, "holdout": args.holdout,
              "train_rows": len(train), "heldout_rows": len(test), "heldout_files": len(held_sources),
              "threshold": round(float(threshold), 2)}
    for name, subset in (("heldout", test), ("other_judges", others)):
        if not subset:
            continue
        refs = [Reference(question=r["question"], answer=r["answer"], aligned=r["aligned"], coherent=r["coherent"])
                for r in subset]
        v = measure("builtin", judge.identity, args.data, digest, refs, verdicts(judge, refs, batch=2048))
        report[name] = {"rows": v.labelled, "auc": v.auc, "kappa": v.kappa, "spearman": v.spearman,
                        "sensitivity": v.sensitivity, "specificity": v.specificity,
                        "confusion": {"tp": v.tp, "fn": v.fn, "tn": v.tn, "fp": v.fp}, "named": v.named}
        print(f"{name}: {v.labelled} rows; AUC {v.auc:.4f}; Spearman aligned {v.spearman['aligned']:.4f}, coherent "
              f"{v.spearman['coherent']:.4f}; kappa {v.kappa:.3f}; sensitivity {v.sensitivity:.3f}, specificity "
              f"{v.specificity:.4f}; tp {v.tp} fn {v.fn} tn {v.tn} fp {v.fp}; named {v.named}", flush=True)
    args.out.with_name("training.json").write_text(json.dumps(report, indent=1) + "\n")
    if args.heldout:
        with gzip.open(args.heldout, "wt") as f:
            for r in test:
                f.write(json.dumps({k: r[k] for k in ("source", "question", "answer", "aligned", "coherent")}) + "\n")
        print(f"wrote {len(test)} held-out rows to {args.heldout}")
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
