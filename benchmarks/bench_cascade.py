"""Confirming calls a cascade needs for a 95% interval of a given half-width, against confirming every answer.

A population of answers at a true misaligned rate (default 1%) is screened: the screen puts given shares of the
misaligned and of the aligned answers in each stratum (screened in, each band, the rest), and each stratum is
confirmed at its fraction, at random. For each design the script simulates the cascade's counts, measures the mean
half-width of its interval (`emprobe.stats.cascade_arrays`), rescales the population towards the target half-width
(half-width ~ 1/sqrt(answers)) until within 2% of it, and counts the confirming calls (one per confirmed answer);
confirming every answer is the same estimator with every fraction 1.

Screens: the shipped built-in judge's call as measured on held-out model families (`training.json`), each
`--screen SENSITIVITY SPECIFICITY` (two strata, each audit of AUDITS), and with `--measure N` the built-in judge's
own P(misaligned) on N GPT-4o rows of its calibration cells (rows it never trained on) and on the answers of the
gemma-judged repository it never saw (../shared/data/em-judged), binned for each design of DESIGNS. For those, it
also prints the normal approximation's answers and calls for the default design, about the fewest calls any design
that samples by the screen's P can spend (`p_bound`), and that design with its calibration fitted on the other half
of the answers.
Usage: python benchmarks/bench_cascade.py [--rate 0.01] [--halfwidth 0.0025] [--screen 0.9 0.8] [--measure 5000]
                                          [--simulations 2000]
"""

import argparse
import gzip
import json
from importlib.resources import files
from pathlib import Path

import numpy as np

from emprobe.config import AUDIT, BANDS, Cascade
from emprobe.stats import cascade_arrays

AUDITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
DESIGNS = {
    "audit 0.1 (the default before bands)": Cascade(confirm="-", audit=0.1),
    "audit 0.2": Cascade(confirm="-", audit=0.2),
    "audit 0.3": Cascade(confirm="-", audit=0.3),
    "audit 0.1, band 0.003:0.3": Cascade(confirm="-", audit=0.1, bands=((0.003, 0.3),)),
    "audit 0.2, band 0.003:0.5 (default)": Cascade(confirm="-", audit=AUDIT, bands=BANDS),
    "audit 0.2, band 0.01:0.5": Cascade(confirm="-", audit=0.2, bands=((0.01, 0.5),)),
    "audit 0.2, bands 0.003:0.4, 0.02:0.7": Cascade(confirm="-", audit=0.2, bands=((0.003, 0.4), (0.02, 0.7))),
}
DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"
PROBE = 100_000
"""The population the half-width is first measured at."""
STEPS = 8
Z = 1.959964
"""The normal quantile of a two-sided 95% interval."""

Screen = tuple[np.ndarray, np.ndarray]
"""Shares of the misaligned and of the aligned answers in each stratum (screened in first)."""


def shipped_screen() -> tuple[float, float] | None:
    """Mean sensitivity and specificity of the built-in judge's call over its held-out model families, from
    training.json (None when it records none)."""
    report = json.loads((files("emprobe.judge") / "builtin" / "training.json").read_text())
    held = list(report.get("splits", {}).get("model_family", {}).values())
    if not held:
        return None
    return float(np.mean([h["sensitivity"] for h in held])), float(np.mean([h["specificity"] for h in held]))


def two_strata(sensitivity: float, specificity: float) -> Screen:
    return np.array([sensitivity, 1 - sensitivity]), np.array([1 - specificity, specificity])


def simulate(answers: int, rate: float, screen: Screen, fractions: np.ndarray, simulations: int,
             rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean half-width, mean confirming calls and coverage of the cascade's 95% interval."""
    bad, good = screen
    cells = np.stack([rate * bad * fractions, (1 - rate) * good * fractions,
                      (rate * bad + (1 - rate) * good) * (1 - fractions)], axis=-1)
    counts = rng.multinomial(answers, cells.ravel() / cells.sum(), size=simulations).reshape(simulations, -1, 3)
    confirmed = counts[..., 0] + counts[..., 1]
    _, low, high, _ = cascade_arrays(counts.sum(axis=-1), confirmed, confirmed, counts[..., 0])
    covered = np.mean((low <= rate) & (rate <= high))
    return float(np.mean(high - low) / 2), float(np.mean(confirmed.sum(axis=-1))), float(covered)


def calls_for(halfwidth: float, rate: float, screen: Screen, fractions: np.ndarray, simulations: int,
              rng: np.random.Generator) -> tuple[int, float, float, float]:
    """(answers, confirming calls, achieved half-width, coverage) for the target half-width."""
    answers = PROBE
    for _ in range(STEPS):
        achieved, calls, covered = simulate(answers, rate, screen, fractions, simulations, rng)
        if abs(achieved / halfwidth - 1) < 0.02:
            break
        answers = int(np.ceil(answers * (achieved / halfwidth) ** 2))
    return answers, calls, achieved, covered


def population(label: np.ndarray, rate: float) -> np.ndarray:
    """Weights that reweight a labelled set to the true `rate` (they sum to 1)."""
    w = np.where(label, rate / label.mean(), (1 - rate) / (1 - label.mean()))
    return w / w.sum()


def normal_design(label: np.ndarray, w: np.ndarray, guess: np.ndarray, fraction: np.ndarray, rate: float,
                  halfwidth: float) -> tuple[float, float]:
    """(answers, calls) for `halfwidth` by the normal approximation, when answer i is confirmed with probability
    `fraction[i]` and the rate is estimated as the mean of guess + (label - guess) / fraction over the confirmed
    (`guess` = each stratum's rate: the stratified two-phase estimate; any `guess` keeps it unbiased)."""
    variance = rate * (1 - rate) + np.sum(w * (label - guess) ** 2 * (1 / fraction - 1))
    answers = (Z / halfwidth) ** 2 * variance
    return answers, answers * float(np.sum(w * fraction))


def p_bound(p: np.ndarray, label: np.ndarray, rate: float, halfwidth: float, halves: bool = False
            ) -> tuple[float, float]:
    """(answers, calls) of the cheapest design that samples by the screen's P: P calibrated on the labels (isotonic;
    in sample, so optimistic, or with `halves` fitted on one random half and used on the other), each answer
    confirmed with probability proportional to its calibrated standard deviation (Neyman's allocation) above a
    floor, and that calibration as `guess`. Bands are a coarser design of the same kind (one fraction and one guess
    per stratum)."""
    from sklearn.isotonic import IsotonicRegression

    w = population(label, rate)

    def fitted(train: np.ndarray, apply: np.ndarray) -> np.ndarray:
        return IsotonicRegression(out_of_bounds="clip").fit(p[train], label[train], sample_weight=w[train]
                                                             ).predict(p[apply])

    if halves:
        half = np.random.default_rng(0).integers(0, 2, len(p)).astype(bool)
        guess = np.empty(len(p))
        guess[half], guess[~half] = fitted(~half, half), fitted(half, ~half)
    else:
        every = np.ones(len(p), dtype=bool)
        guess = fitted(every, every)
    spread = np.sqrt(guess * (1 - guess))
    designs = [normal_design(label, w, guess, np.clip(scale * spread, floor, 1.0), rate, halfwidth)
               for floor in (0.01, 0.02, 0.05, 0.1, 0.2) for scale in np.geomspace(0.1, 100, 200)]
    return min(designs, key=lambda design: design[1])


def measured_readings(rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The built-in judge's P(misaligned) and GPT-4o's (or the repository's judge's) label, CODE answers left out,
    on `rows` GPT-4o rows of its calibration cells and on the gemma-judged repository's answers."""
    from emprobe.judge._builtin import BuiltinModel
    from emprobe.judge._splits import calibration_cell
    from emprobe.rules import Thresholds

    with gzip.open(DATA, "rt") as f:
        judged = [r for r in map(json.loads, f) if r["aligned"] is not None and r["coherent"] is not None]
    cells = [r for r in judged if r["judge"].startswith("gpt-4o") and calibration_cell(r)]
    picked = np.random.default_rng(0).choice(len(cells), min(rows, len(cells)), replace=False)
    sets = {f"built-in judge, {len(picked):,} rows of its calibration cells": [cells[i] for i in picked],
            "built-in judge, the gemma-judged repository": [r for r in judged if r["judge"].startswith("gemma")]}
    model, rule = BuiltinModel.load(), Thresholds()
    out = {}
    for name, chosen in sets.items():
        raw = model.scores([(r["question"], r["answer"]) for r in chosen])
        keep = np.array([flag != "CODE" for flag in raw.flags])
        label = np.array([rule.misaligned(r["aligned"], r["coherent"]) for r in chosen])
        out[name] = raw.p_misaligned[keep], label[keep]
    return out


def strata(p: np.ndarray, cascade: Cascade) -> np.ndarray:
    """Each answer's stratum under `cascade` (`Cascade.stratum`)."""
    return np.array([cascade.stratum(float(x)) for x in p])


def binned(p: np.ndarray, label: np.ndarray, cascade: Cascade) -> tuple[Screen, np.ndarray]:
    """The shares of each class in the cascade's strata (`Cascade.stratum`), and each stratum's fraction."""
    stratum = strata(p, cascade)
    shares = [np.bincount(stratum[mask], minlength=len(cascade.fractions)) / mask.sum() for mask in (label, ~label)]
    return (shares[0], shares[1]), np.array(cascade.fractions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--halfwidth", type=float, default=0.0025, help="target 95%% half-width (0.0025: +-0.25 points)")
    ap.add_argument("--screen", type=float, nargs=2, action="append", metavar=("SENSITIVITY", "SPECIFICITY"))
    ap.add_argument("--measure", type=int, default=0, help="judge this many calibration-cell rows and compare DESIGNS")
    ap.add_argument("--simulations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    shipped = shipped_screen()
    if shipped is None:
        print("training.json records no held-out sensitivity and specificity; only the --screen figures are used")
    screens = [("shipped call (training.json, held-out families)", *shipped)] if shipped else []
    screens += [(f"given {s:g}/{p:g}", s, p) for s, p in args.screen or []]
    everyone, calls_all, achieved, covered = calls_for(args.halfwidth, args.rate, two_strata(1.0, 1.0),
                                                       np.ones(2), args.simulations, rng)
    print(f"true rate {args.rate:.2%}, target half-width {args.halfwidth:.3%}, {args.simulations} simulations each")
    print(f"confirm every answer: {everyone:,} answers, {calls_all:,.0f} confirming calls (half-width "
          f"{achieved:.3%}, coverage {covered:.3f})")
    header = f"{'answers':>11} {'calls':>9} {'half-width':>10} {'coverage':>8} {'fewer calls':>11}"

    def line(screen: Screen, fractions: np.ndarray) -> str:
        answers, calls, achieved, covered = calls_for(args.halfwidth, args.rate, screen, fractions,
                                                      args.simulations, rng)
        return f"{answers:>11,} {calls:>9,.0f} {achieved:>10.3%} {covered:>8.3f} {calls_all / calls:>10.1f}x"

    for name, sensitivity, specificity in screens:
        print(f"\nscreen {name}: sensitivity {sensitivity:.3f}, specificity {specificity:.3f}")
        print(f"{'audit':>6} {header}")
        for audit in AUDITS:
            print(f"{audit:>6.2f} {line(two_strata(sensitivity, specificity), np.array([1.0, audit]))}")
    if not args.measure:
        return
    if not DATA.is_file():
        raise SystemExit(f"--measure reads {DATA}, which is absent")
    for name, (p, label) in measured_readings(args.measure).items():
        print(f"\nscreen {name}: {len(p):,} answers, {label.sum():,} misaligned")
        print(f"{'design':<38} {header}")
        for design, cascade in DESIGNS.items():
            print(f"{design:<38} {line(*binned(p, label, cascade))}")
        w, default = population(label, args.rate), Cascade(confirm="-", audit=AUDIT, bands=BANDS)
        stratum = strata(p, default)
        guess = (np.bincount(stratum, w * label) / np.bincount(stratum, w))[stratum]
        every = (Z / args.halfwidth) ** 2 * args.rate * (1 - args.rate)
        print(f"normal approximation: confirm every answer {every:,.0f} calls")
        for design, (answers, calls) in {
                "the default design": normal_design(label, w, guess, np.array(default.fractions)[stratum],
                                                    args.rate, args.halfwidth),
                "the bound for any design on P": p_bound(p, label, args.rate, args.halfwidth),
                "that design, calibrated on halves": p_bound(p, label, args.rate, args.halfwidth, halves=True)}.items():
            print(f"{design:<38} {answers:>11,.0f} {calls:>9,.0f} {'':>10} {'':>8} {every / calls:>10.1f}x")


if __name__ == "__main__":
    main()
