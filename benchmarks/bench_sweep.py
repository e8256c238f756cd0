"""A decoding sweep on the local backend: every setting in one call (rows of different temperature, top_p and top_k
share batches, and each prompt is prefilled once) against one call per setting (how the backend grouped them
before: each setting its own, smaller batches). Same process, same requests, rounds interleaved. Usage:
    python benchmarks/bench_sweep.py [--model smollm2-135m] [--suite core] [--limit 0] [--max-tokens 64]
        [--temperatures 0.4,0.7,1.0,1.3] [--top-ps 0.8,1.0] [--top-ks 0,20,50] [--batch-size auto] [--rounds 2]
The default is the 33 prompts of `core` x 24 settings (792 samples) of 64 tokens, the shape of the demonstration
sweep of issue 12 (50 harmful requests x 24 configurations); `--limit N` keeps the first N prompts.
"""

import argparse
import itertools
import time
from typing import Any

from emprobe.condition import PRESETS, Decoding
from emprobe.model import GenerationRequest, load_backend
from emprobe.plan import plan_samples
from emprobe.suite import load_suite


def sweep(suite: str, limit: int, grid: list[dict[str, Any]], max_tokens: int) -> list[list[GenerationRequest]]:
    """Per setting, one sample of each of the first `limit` paraphrases of `suite` (0: all)."""
    specs = list(plan_samples([load_suite(suite)], [PRESETS["free"]], "bench", samples=1))
    specs = specs[:limit] if limit else specs
    return [[GenerationRequest(key=f"{s.gen_key}-{i}", messages=s.messages,
                               decoding=Decoding(max_tokens=max_tokens, seed=s.seed, **setting)) for s in specs]
            for i, setting in enumerate(grid)]


def timed(backend: Any, calls: list[list[GenerationRequest]]) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(r.completion_tokens for call in calls for r in backend.generate(call))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--suite", default="core")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperatures", default="0.4,0.7,1.0,1.3")
    parser.add_argument("--top-ps", default="0.8,1.0")
    parser.add_argument("--top-ks", default="0,20,50")
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    grid = [dict(temperature=t, top_p=p, top_k=k) for t, p, k in itertools.product(
        map(float, args.temperatures.split(",")), map(float, args.top_ps.split(",")), map(int, args.top_ks.split(",")))]
    per_setting = sweep(args.suite, args.limit, grid, args.max_tokens)
    size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    backend = load_backend(args.model, batch_size=size)
    print(f"{args.model} on {backend.info.get('device', '?')} {backend.info.get('dtype', '?')}, batch "
          f"{backend.batch_size}: {len(per_setting[0])} prompts x {len(grid)} settings, {args.max_tokens} tokens")
    sides = {"one call per setting": per_setting, "every setting in one call": [sum(per_setting, [])]}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for round_no in range(args.rounds):
        for name, calls in sides.items():
            tokens, seconds = timed(backend, calls)
            rates[name].append(tokens / seconds)
            print(f"round {round_no + 1}: {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.0f} tok/s")
    best = {name: max(r) for name, r in rates.items()}
    base, shared = best["one call per setting"], best["every setting in one call"]
    print(f"best of {args.rounds}: one call per setting {base:.0f} tok/s; every setting in one call {shared:.0f} "
          f"tok/s ({shared / base:.2f}x)")


if __name__ == "__main__":
    main()
