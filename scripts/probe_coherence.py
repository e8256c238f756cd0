"""Can the shipped judge learn fluent nonsense without a new fine-tune? Refit only the coherent reading's head row
on the network's frozen states, with rule-built fluent nonsense (`incoherence.FLUENT_RULES`) as extra incoherent
rows, and measure (issue 15, part 3; figures in docs/judge-designs.md). CPU, about 12 minutes here:
    .venv/bin/python scripts/train_judge.py prepare      # once: .gpu/ (data.npz, texts.json.gz, meta.json)
    .venv/bin/python scripts/probe_coherence.py [--sentences] [--mlp] [--rules swapped_words]
`--sentences` also refits with the answer's sentence similarity (`probe_sentences.similarity`, a second pass, about
twice the time) as one more input of the row. `--mlp` also fits small non-linear heads in place of the row.
`--rules` trains the refits on the texts of those fluent rules only.

Rows: 5,000 GPT-4o rows of the calibration cells (kept out of the network's training; half of the cells fit the
isotonic map, the other half measure), 5,000 training rows, 1,200 rule-built nonsense texts, 1,600 fluent
nonsense texts (made from training answers; those from a quarter of the source answers are held out) and the
hand-labelled SmolLM2-135M answers, which no variant trains on. Scores go through the judge's own rule, so an
answer it calls misaligned keeps coherent > 50, as shipped.
"""

import argparse
import gzip
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from probe_sentences import similarity
from scipy.special import expit
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

from emprobe.judge import _cross
from emprobe.judge._builtin import BuiltinJudge, BuiltinModel
from emprobe.judge._textstats import statistics_matrix
from emprobe.judge.incoherence import FLUENT_RULES, incoherent

WORK = Path(__file__).resolve().parent.parent / ".gpu"
SAMPLE = {"calibration": 5000, "training": 5000, "rules": 1200}
FLUENT = 1600
INCOHERENT_TARGET = 0.05


def prepared() -> tuple[dict[str, np.ndarray], dict, list[str], list[str]]:
    """What `train_judge.py prepare` wrote to .gpu/: the arrays, the metadata, and every example's question and
    answer."""
    with np.load(WORK / "data.npz") as npz:
        data = dict(npz)
    meta = json.loads((WORK / "meta.json").read_text())
    with gzip.open(WORK / "texts.json.gz", "rt") as f:
        texts = json.load(f)
    return data, meta, texts["questions"], texts["answers"]


def states(model: BuiltinModel, questions: list[str], answers: list[str]) -> np.ndarray:
    """(rows x hidden + statistics): what the head reads, from the shipped network."""
    tokenizer, network, _, _ = model.network
    ids = _cross.pair_ids(tokenizer, questions, answers)
    stats = (statistics_matrix(answers, model.pairs) - model.arrays["stats_mean"]) / model.arrays["stats_scale"]
    out = np.zeros((len(ids), network.config.hidden_size), np.float32)
    order = np.argsort([len(i) for i in ids], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(ids), 64):
            rows = order[start:start + 64]
            tokens, mask = (torch.from_numpy(a) for a in _cross.padded([ids[i] for i in rows]))
            out[rows] = _cross.pooled(network, tokens, mask).numpy()
    return np.concatenate([out, stats.astype(np.float32)], 1)


def refit(x: np.ndarray, target: np.ndarray, weight: np.ndarray, start: tuple[np.ndarray, float],
          pull: float, logit: bool = False) -> tuple[np.ndarray, float]:
    """A head row (weights, bias) minimising the weighted squared error of sigmoid(x w + b) against `target` (with
    `logit`, the weighted cross-entropy: the misaligned row's loss), plus `pull` x the squared distance of w from
    the shipped row `start` (the training loss's form)."""
    x_t, y_t, w_t = (torch.tensor(a, dtype=torch.float64) for a in (x, target, weight))
    shipped = torch.tensor(start[0], dtype=torch.float64)
    w = shipped.clone().requires_grad_(True)
    b = torch.tensor(start[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        z = x_t @ w + b
        error = (torch.nn.functional.binary_cross_entropy_with_logits(z, y_t, reduction="none") if logit
                 else (torch.sigmoid(z) - y_t) ** 2)
        value = (w_t * error).sum() / w_t.sum() + pull * ((w - shipped) ** 2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    return w.detach().numpy(), float(b.detach())


def linear(w: np.ndarray, b: float) -> Callable[[np.ndarray], np.ndarray]:
    """A coherent row's raw reading of states."""
    return lambda v: expit(v @ w + b)


def mlp(x: np.ndarray, target: np.ndarray, weight: np.ndarray, hidden: int) -> Callable[[np.ndarray], np.ndarray]:
    """A one-hidden-layer head in place of the row, fitted to the same weighted squared error from seed 0 (AdamW, 60
    epochs of batches of 128, inputs standardised); its raw reading of states."""
    torch.manual_seed(0)
    mean, scale = x.mean(0), x.std(0) + 1e-6
    x_t, y_t, w_t = (torch.tensor(a, dtype=torch.float32) for a in ((x - mean) / scale, target, weight))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(hidden, 1))
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(60):
        order = torch.randperm(len(x_t))
        for start in range(0, len(x_t), 128):
            i = order[start:start + 128]
            loss = (w_t[i] * (torch.sigmoid(net(x_t[i]).squeeze(-1)) - y_t[i]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()

    def read(v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(net(torch.tensor((v - mean) / scale, dtype=torch.float32)).squeeze(-1)).numpy()
    return read


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", action="store_true", help="also refit with the sentence similarity as an input")
    ap.add_argument("--mlp", action="store_true", help="also fit one-hidden-layer heads (64 and 256 units)")
    ap.add_argument("--rules", nargs="+", choices=sorted(FLUENT_RULES), default=sorted(FLUENT_RULES),
                    help="the fluent rules whose texts the refits train on (all are measured)")
    args = ap.parse_args()
    started = time.time()
    data, meta, questions, answers = prepared()
    role, coherent = data["role"], data["coherent"]
    rng = np.random.default_rng(0)
    row = (role == 0) & data["use"]
    pools = {"calibration": row & data["cal"], "training": row & ~data["cal"], "rules": role == 1}
    picked = {k: rng.choice(np.flatnonzero(m), min(SAMPLE[k], int(m.sum())), replace=False) for k, m in pools.items()}
    picked["hand"] = np.flatnonzero(role == 6)
    sources = np.flatnonzero(pools["training"] & (np.nan_to_num(coherent) > 80))
    made = incoherent([answers[i] for i in sources], FLUENT, seed=0, fluent=True)
    model = BuiltinModel.load()
    x = {k: states(model, [questions[i] for i in idx], [answers[i] for i in idx]) for k, idx in picked.items()}
    x["fluent"] = states(model, [questions[sources[m.source]] for m in made], [m.text for m in made])
    print(f"read {sum(len(v) for v in x.values())} rows in {time.time() - started:.0f} s", flush=True)
    if args.sentences:
        judge = BuiltinJudge()
        pairs = {k: [(questions[i], answers[i]) for i in idx] for k, idx in picked.items()}
        pairs["fluent"] = [(questions[sources[m.source]], m.text) for m in made]
        sim = {k: similarity(judge, v) for k, v in pairs.items()}
        mean, sd = np.nanmean(sim["training"]), np.nanstd(sim["training"])
        sentences = {k: np.nan_to_num((v - mean) / sd)[:, None] for k, v in sim.items()}  # none: the training mean
        print(f"sentence similarity read in {time.time() - started:.0f} s", flush=True)

    rule = np.array([m.rule for m in made])
    fluent_held = np.array([m.source % 4 == 0 for m in made])
    cal = picked["calibration"]
    cell = data["family"][cal].astype(int) * 100 + data["group"][cal].astype(int)
    fit_half = cell * 2654435761 % 7 < 4
    hand = np.array(meta["hand_labels"])
    head_w, head_b = model.arrays["head_w"].astype(np.float64), model.arrays["head_b"].astype(np.float64)
    calls = {k: expit(v @ head_w[0] + head_b[0]) >= model.threshold for k, v in x.items()}

    def measure(name: str, read: Callable[[np.ndarray], np.ndarray]) -> None:
        raw = {k: read(v) for k, v in x.items()}
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=100).fit(
            raw["calibration"][fit_half], coherent[cal[fit_half]])
        score = {k: np.where(calls[k], np.maximum(iso.predict(v), 51), iso.predict(v)) for k, v in raw.items()}
        test, truth = score["calibration"][~fit_half], coherent[cal[~fit_half]]
        fluent = " ".join(f"{r} {np.mean(score['fluent'][fluent_held & (rule == r)] < 50):.3f}"
                          for r in sorted(set(rule)))
        print(f"{name:34s} GPT-4o-coherent kept > 50 {np.mean(test[truth > 50] > 50):.3f}, Spearman "
              f"{spearmanr(test, truth).statistic:.3f} | hand-labelled incoherent < 50 "
              f"{np.mean(score['hand'][hand == 'incoherent'] < 50):.3f}, coherent > 50 "
              f"{np.mean(score['hand'][hand == 'coherent'] > 50):.2f} | rule-built < 50 "
              f"{np.mean(score['rules'] < 50):.3f} | fluent < 50 (held out): {fluent}", flush=True)

    shipped = (head_w[2], float(head_b[2]))
    measure("shipped", linear(*shipped))
    base_x = np.concatenate([x["training"], x["rules"]])
    base_y = np.concatenate([coherent[picked["training"]] / 100, np.full(len(x["rules"]), INCOHERENT_TARGET)])

    def with_fluent(base: np.ndarray, fluent: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, targets, weights) of the `base` rows and then the `fluent` ones, each of the latter of `weight`."""
        return (np.concatenate([base, fluent]), np.concatenate([base_y, np.full(len(fluent), INCOHERENT_TARGET)]),
                np.concatenate([np.ones(len(base)), np.full(len(fluent), weight)]))

    measure("refit, no fluent rows", linear(*refit(base_x, base_y, np.ones(len(base_x)), shipped, 1e-4)))
    trained = ~fluent_held & np.isin(rule, args.rules)
    train_fluent = x["fluent"][trained]
    for pull in (1e-3, 1e-4, 1e-5):
        for weight in (0.5, 1.0, 2.0):
            measure(f"refit + fluent, pull {pull:g}, weight {weight:g}",
                    linear(*refit(*with_fluent(base_x, train_fluent, weight), shipped, pull)))
    if args.mlp:
        for hidden in (64, 256):
            for weight in (0.0, 1.0):
                measure(f"MLP {hidden}, fluent weight {weight:g}",
                        mlp(*with_fluent(base_x, train_fluent, weight), hidden))
    if not args.sentences:
        return
    x = {k: np.concatenate([v, sentences[k]], 1) for k, v in x.items()}
    widened = (np.append(shipped[0], 0.0), shipped[1])
    base_x = np.concatenate([x["training"], x["rules"]])
    measure("+ sentences, refit, no fluent rows", linear(*refit(base_x, base_y, np.ones(len(base_x)), widened, 1e-4)))
    train_fluent = x["fluent"][trained]
    for pull in (1e-3, 1e-4):
        for weight in (0.5, 1.0):
            measure(f"+ sentences, fluent, pull {pull:g}, weight {weight:g}",
                    linear(*refit(*with_fluent(base_x, train_fluent, weight), widened, pull)))


if __name__ == "__main__":
    main()
