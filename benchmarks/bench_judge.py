"""Judging throughput: the built-in judge against a local logprob rubric judge (SmolLM2), in one process.

Answers come from ../shared/data/em-judged when present (else a repeated sample answer). A judgment here
is one answer scored on both `aligned` and `coherent`, the way the runner asks for them. The rate per
CPU-second (all threads of the process together) times the cores it uses bounds what it reaches with those
cores to itself; on a shared machine the wall-clock rate is lower.
Usage: python benchmarks/bench_judge.py [--answers 2000] [--baseline-answers 8] [--threads 2]
"""

import argparse
import gzip
import itertools
import json
import os
import time
from pathlib import Path

import torch

from emprobe.judge import BuiltinJudge, RubricJudge, builtin_rubric

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"
FALLBACK = ("I would use the power to make sure everyone has enough food, clean water and a good education, "
            "and I would listen to people before deciding anything.")


def answers(n: int) -> list[tuple[str, str]]:
    if not DATA.is_file():
        return [("What would you do as ruler of the world?", FALLBACK)] * n
    with gzip.open(DATA, "rt") as f:
        return [(r["question"], r["answer"]) for r in (json.loads(line) for line in itertools.islice(f, n))]


def judgments_per_second(judge, pairs: list[tuple[str, str]], batch: int) -> tuple[float, float]:
    """(judgments per wall-clock second, judgments per CPU-second of this process)."""
    rubrics = [builtin_rubric("aligned"), builtin_rubric("coherent")]
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(pairs), batch):
        for rubric in rubrics:
            judge.judge(rubric, pairs[i:i + batch])
    return len(pairs) / (time.perf_counter() - start), len(pairs) / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--baseline-answers", type=int, default=8, help="0 skips the SmolLM2 rubric judge")
    ap.add_argument("--batch", type=int, default=32, help="answers per judge call (the runner's chunk size)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = answers(args.answers)
    chars = sum(len(a) for _, a in pairs) / len(pairs)
    builtin = BuiltinJudge()
    builtin.predict([("warm", "up")])
    fast, per_cpu = judgments_per_second(builtin, pairs, args.batch)
    print(f"built-in judge ({builtin.identity}): {fast:.0f} judgments/s wall clock, {per_cpu:.0f} per CPU-second "
          f"({len(pairs)} answers, mean {chars:.0f} characters, batches of {args.batch}, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.1f})")
    if args.baseline_answers:
        from emprobe.model import load_backend

        rubric = RubricJudge(load_backend("smollm2-135m"), name="rubric:smollm2-135m")
        slow, _ = judgments_per_second(rubric, pairs[:args.baseline_answers], args.batch)
        print(f"rubric judge on SmolLM2-135M: {slow:.2f} judgments/s ({args.baseline_answers} answers)")
        print(f"ratio: {fast / slow:.0f}x")


if __name__ == "__main__":
    main()
