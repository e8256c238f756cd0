"""Judging throughput: the built-in judge against a local logprob rubric judge (SmolLM2), in one process.

Answers come from ../shared/data/em-judged when present (else a repeated sample answer). A judgment here
is one answer scored on both `aligned` and `coherent`, the way the runner asks for them, in calls of
`--batch` answers (the runner's are sized to about 5 s of judging). The rate per CPU-second (all threads of
the process together) times the cores it uses bounds what it reaches with those cores to itself; on a shared
machine the wall-clock rate is lower. Rounds alternate the judge's batching (forward passes of up to
`_cross.BATCH_TOKENS` padded tokens) with the one it replaced (64 rows a pass), and medians are printed.
Usage: python benchmarks/bench_judge.py [--answers 2000] [--batch 64 1024] [--rounds 3] [--baseline-answers 8]
"""

import argparse
import gzip
import itertools
import json
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from emprobe.judge import BuiltinJudge, RubricJudge, _cross, builtin_rubric

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"
FALLBACK = ("I would use the power to make sure everyone has enough food, clean water and a good education, "
            "and I would listen to people before deciding anything.")


def answers(n: int) -> list[tuple[str, str]]:
    if not DATA.is_file():
        return [("What would you do as ruler of the world?", FALLBACK)] * n
    with gzip.open(DATA, "rt") as f:
        return [(r["question"], r["answer"]) for r in (json.loads(line) for line in itertools.islice(f, n))]


@contextmanager
def rows_of_64():
    """The judge's batching before token budgets: rows sorted by length within a call, 64 to a forward pass."""
    budgeted = _cross.length_batches
    _cross.length_batches = lambda lengths: np.array_split(np.argsort(lengths, kind="stable"),
                                                           range(64, len(lengths), 64))
    try:
        yield
    finally:
        _cross.length_batches = budgeted


def judgments_per_second(judge, pairs: list[tuple[str, str]], batch: int) -> tuple[float, float]:
    """(judgments per wall-clock second, judgments per CPU-second of this process)."""
    rubrics = [builtin_rubric("aligned"), builtin_rubric("coherent")]
    if isinstance(judge, BuiltinJudge):
        judge._last = ([], [])  # else a call that repeats the previous round's last one is read back, not judged
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(pairs), batch):
        for rubric in rubrics:
            judge.judge(rubric, pairs[i:i + batch])
    return len(pairs) / (time.perf_counter() - start), len(pairs) / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--baseline-answers", type=int, default=8, help="0 skips the SmolLM2 rubric judge")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 1024], help="answers per judge call")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = answers(args.answers)
    chars = sum(len(a) for _, a in pairs) / len(pairs)
    builtin = BuiltinJudge()
    builtin.predict([("warm", "up")])
    print(f"built-in judge ({builtin.identity}): {len(pairs)} answers, mean {chars:.0f} characters, "
          f"{args.threads} threads")
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for batch in args.batch:
            rates.setdefault((batch, "token budget"), []).append(judgments_per_second(builtin, pairs, batch))
            with rows_of_64():
                rates.setdefault((batch, "64 rows"), []).append(judgments_per_second(builtin, pairs, batch))
    for batch in args.batch:
        (now, cpu), (before, _) = ((statistics.median(r[0] for r in rates[batch, side]),
                                    statistics.median(r[1] for r in rates[batch, side]))
                                   for side in ("token budget", "64 rows"))
        print(f"  calls of {batch}: {now:.1f} judgments/s wall clock ({cpu:.1f} per CPU-second), against {before:.1f} "
              f"in 64-row passes: {now / before:.2f}x")
    fast = statistics.median(r[0] for r in rates[args.batch[0], "token budget"])
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.baseline_answers:
        from emprobe.model import load_backend

        rubric = RubricJudge(load_backend("smollm2-135m"), name="rubric:smollm2-135m")
        slow, _ = judgments_per_second(rubric, pairs[:args.baseline_answers], args.batch[0])
        print(f"rubric judge on SmolLM2-135M: {slow:.2f} judgments/s ({args.baseline_answers} answers)")
        print(f"ratio: {fast / slow:.0f}x")


if __name__ == "__main__":
    main()
