"""Confirming calls a cascade needs for a 95% interval of a given half-width, against confirming every answer.

A population of answers at a true misaligned rate (default 1%) is screened with a given sensitivity and
specificity; the screened-in answers are all confirmed, the rest audited at random. For each audit fraction the
script simulates the cascade's counts, measures the mean half-width of its interval (`emprobe.stats.cascade_arrays`),
rescales the population towards the target half-width (half-width ~ 1/sqrt(answers)) until within 2% of it, and
counts the confirming calls (one per confirmed answer); confirming every answer is the same estimator
with an audit of 1. The default screen is the shipped built-in judge's call as measured on held-out model families
(`emprobe/judge/builtin/training.json`); add others with --screen SENSITIVITY SPECIFICITY.
Usage: python benchmarks/bench_cascade.py [--rate 0.01] [--halfwidth 0.0025] [--screen 0.9 0.8] [--simulations 2000]
"""

import argparse
import json
from importlib.resources import files

import numpy as np

from emprobe.stats import cascade_arrays

AUDITS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
PROBE = 100_000
"""The population the half-width is first measured at."""
STEPS = 8


def shipped_screen() -> tuple[float, float] | None:
    """Mean sensitivity and specificity of the built-in judge's call over its held-out model families, from
    training.json (None when it records none)."""
    report = json.loads((files("emprobe.judge") / "builtin" / "training.json").read_text())
    held = list(report.get("splits", {}).get("model_family", {}).values())
    if not held:
        return None
    return float(np.mean([h["sensitivity"] for h in held])), float(np.mean([h["specificity"] for h in held]))


def simulate(answers: int, rate: float, sensitivity: float, specificity: float, audit: float, simulations: int,
             rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean half-width, mean confirming calls and coverage of the cascade's 95% interval."""
    cells = np.array([rate * sensitivity, (1 - rate) * (1 - specificity), rate * (1 - sensitivity) * audit,
                      (1 - rate) * specificity * audit])
    counts = rng.multinomial(answers, [*cells, max(0.0, 1 - cells.sum())], size=simulations)
    screened_in, audited = counts[:, 0] + counts[:, 1], counts[:, 2] + counts[:, 3]
    strata = np.stack([screened_in, answers - screened_in], axis=-1)
    confirmed = np.stack([screened_in, audited], axis=-1)
    misaligned = np.stack([counts[:, 0], counts[:, 2]], axis=-1)
    _, low, high, _ = cascade_arrays(strata, confirmed, confirmed, misaligned)
    covered = np.mean((low <= rate) & (rate <= high))
    return float(np.mean(high - low) / 2), float(np.mean(confirmed.sum(axis=-1))), float(covered)


def calls_for(halfwidth: float, rate: float, sensitivity: float, specificity: float, audit: float,
              simulations: int, rng: np.random.Generator) -> tuple[int, float, float, float]:
    """(answers, confirming calls, achieved half-width, coverage) for the target half-width."""
    answers = PROBE
    for _ in range(STEPS):
        achieved, calls, covered = simulate(answers, rate, sensitivity, specificity, audit, simulations, rng)
        if abs(achieved / halfwidth - 1) < 0.02:
            break
        answers = int(np.ceil(answers * (achieved / halfwidth) ** 2))
    return answers, calls, achieved, covered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=0.01)
    ap.add_argument("--halfwidth", type=float, default=0.0025, help="target 95%% half-width (0.0025: +-0.25 points)")
    ap.add_argument("--screen", type=float, nargs=2, action="append", metavar=("SENSITIVITY", "SPECIFICITY"))
    ap.add_argument("--simulations", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    shipped = shipped_screen()
    if shipped is None:
        print("training.json records no held-out sensitivity and specificity; only the --screen figures are used")
    screens = [("shipped call (training.json, held-out families)", *shipped)] if shipped else []
    screens += [(f"given {s:g}/{p:g}", s, p) for s, p in args.screen or []]
    everyone, calls_all, achieved, covered = calls_for(args.halfwidth, args.rate, 1.0, 1.0, 1.0, args.simulations,
                                                       rng)
    print(f"true rate {args.rate:.2%}, target half-width {args.halfwidth:.3%}, {args.simulations} simulations each")
    print(f"confirm every answer: {everyone:,} answers, {calls_all:,.0f} confirming calls (half-width "
          f"{achieved:.3%}, coverage {covered:.3f})")
    for name, sensitivity, specificity in screens:
        print(f"\nscreen {name}: sensitivity {sensitivity:.3f}, specificity {specificity:.3f}")
        print(f"{'audit':>6} {'answers':>11} {'calls':>9} {'half-width':>10} {'coverage':>8} {'fewer calls':>11}")
        for audit in AUDITS:
            answers, calls, achieved, covered = calls_for(args.halfwidth, args.rate, sensitivity, specificity, audit,
                                                          args.simulations, rng)
            print(f"{audit:>6.2f} {answers:>11,} {calls:>9,.0f} {achieved:>10.3%} {covered:>8.3f} "
                  f"{calls_all / calls:>10.1f}x")


if __name__ == "__main__":
    main()
