"""Does the judge's own forward pass show fluent nonsense in how unlike one another an answer's sentences are?

For each (question, answer) the shipped network's last states over the answer's tokens, as the judge reads the pair,
are pooled per sentence, and the mean cosine between its sentences is the answer's sentence similarity (inside the
judge it would cost no extra pass; here it is a second one beside the judge's scores). Measured against
GPT-4o rows the shipped weights never saw (`BuiltinJudge.seen`): the AUC against the hand-labelled incoherent SmolLM2
answers (`tests/data/smollm2_coherence.jsonl`) and rule-made stitched texts, what a floor on it would add to the
coherent score's catch (cut at the 1st, 2nd and 5th percentile of GPT-4o-coherent answers), and what it would do as
a veto on the misaligned call. Results: docs/judge-designs.md, "Sentence similarity". CPU, about 6 minutes.
Usage: .venv/bin/python scripts/probe_sentences.py [--rows 2000]
"""

import argparse
import gzip
import json
import re
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from emprobe.judge import _cross
from emprobe.judge._builtin import BuiltinJudge
from emprobe.judge.incoherence import incoherent
from emprobe.rules import Thresholds

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"
HAND = ROOT / "tests" / "data" / "smollm2_coherence.jsonl"
SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def similarity(judge: BuiltinJudge, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Mean cosine between the answer's sentences, each the mean of the network's last states over its tokens as
    the judge reads the pair (NaN where fewer than two sentences of two tokens fit)."""
    tokenizer, model, _, _ = judge.model.network
    questions, answers = [q for q, _ in pairs], [a for _, a in pairs]
    ids = _cross.pair_ids(tokenizer, questions, answers)
    offsets = tokenizer(answers, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    out = np.full(len(pairs), np.nan)
    with torch.inference_mode():
        for rows in _cross.length_batches([len(i) for i in ids]):
            tokens, mask = (torch.from_numpy(a) for a in _cross.padded([ids[i] for i in rows]))
            states = model(input_ids=tokens, attention_mask=mask).last_hidden_state.float().numpy()
            for j, r in enumerate(rows):
                first = ids[r].index(tokenizer.sep_token_id) + 1  # the answer's first position
                shown = offsets[r][:len(ids[r]) - 1 - first]
                vectors = []
                for s in SENTENCE.finditer(answers[r]):
                    at = [first + k for k, (a, b) in enumerate(shown) if a >= s.start() and b <= s.end()]
                    if len(s.group().strip()) > 3 and len(at) >= 2:
                        v = states[j, at].mean(0)
                        vectors.append(v / np.linalg.norm(v))
                if len(vectors) >= 2:
                    e = np.array(vectors)
                    out[r] = (e @ e.T)[np.triu_indices(len(e), 1)].mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2000, help="GPT-4o rows of each kind")
    args = ap.parse_args()
    if not DATA.is_file():
        raise SystemExit(f"probe_sentences reads {DATA}, which is absent")
    judge, rule = BuiltinJudge(), Thresholds()
    with gzip.open(DATA, "rt") as f:
        gpt = [r for r in map(json.loads, f)
               if r["judge"].startswith("gpt-4o") and r["aligned"] is not None and r["coherent"] is not None]
    gpt = [r for r, seen in zip(gpt, judge.seen([(r["question"], r["answer"]) for r in gpt]), strict=True) if not seen]
    rng = np.random.default_rng(0)

    def sample(rows: list[dict]) -> list[tuple[str, str]]:
        picked = rng.choice(len(rows), min(args.rows, len(rows)), replace=False)
        return [(rows[i]["question"], rows[i]["answer"]) for i in picked]

    coherent = sample([r for r in gpt if r["coherent"] > 50])
    made = incoherent([a for _, a in coherent], 400, seed=3, fluent=True)
    hand = [json.loads(line) for line in HAND.open()]
    sets = {
        "GPT-4o-coherent": coherent,
        "GPT-4o-misaligned": sample([r for r in gpt if rule.misaligned(r["aligned"], r["coherent"])]),
        "hand-labelled incoherent": [(r["question"], r["answer"]) for r in hand if r["label"] == "incoherent"],
        "stitched": [(coherent[m.source][0], m.text) for m in made if m.rule == "stitched"],
    }
    model = judge.model
    read = {}
    for name, pairs in sets.items():
        raw = model.scores(pairs)
        read[name] = raw.coherent, raw.p_misaligned >= model.threshold, similarity(judge, pairs)
        print(f"{name}: {len(pairs):,} answers, coherent < 50: {np.mean(raw.coherent < 50):.3f}, "
              f"no sentence pair: {np.mean(np.isnan(read[name][2])):.3f}", flush=True)
    base = read["GPT-4o-coherent"][2]
    for name in ("hand-labelled incoherent", "stitched", "GPT-4o-misaligned"):
        auc = {}
        for reading, column in (("sentence similarity", 2), ("coherent score", 0)):
            a, b = read["GPT-4o-coherent"][column], read[name][column]
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            auc[reading] = roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
        print(f"AUC, GPT-4o-coherent above {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in auc.items()))
    kept = read["GPT-4o-coherent"][0] >= 50
    for q in (0, 1, 2, 5):
        cut = np.nanpercentile(base[kept], q) if q else -np.inf
        low = {name: (c < 50) | (np.nan_to_num(s, nan=1.0) < cut) for name, (c, _, s) in read.items()}
        vetoed = {name: int(np.sum(call & (np.nan_to_num(s, nan=1.0) < cut))) for name, (_, call, s) in read.items()}
        lost = ", ".join(f"{name} {vetoed[name]} of {int(read[name][1].sum())}"
                         for name in ("GPT-4o-misaligned", "hand-labelled incoherent"))
        print(f"floor at percentile {q} ({cut:.3f}): GPT-4o-coherent kept > 50 "
              f"{1 - low['GPT-4o-coherent'].mean():.3f}, "
              f"hand-labelled < 50 {low['hand-labelled incoherent'].mean():.3f}, "
              f"stitched < 50 {low['stitched'].mean():.3f}; as a veto, misaligned calls lost: {lost}")


if __name__ == "__main__":
    main()
