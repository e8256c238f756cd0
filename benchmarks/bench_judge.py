"""Judging throughput: the built-in judge against a local logprob rubric judge (SmolLM2), in one process.

Answers come from ../shared/data/em-judged when present (else a repeated sample answer). A judgment here
is one answer scored on both `aligned` and `coherent`, the way the runner asks for them, in calls of
`--batch` answers (the runner's are sized to about 5 s of judging). The rate per CPU-second (all threads of
the process together) times the cores it uses bounds what it reaches with those cores to itself; on a shared
machine the wall-clock rate is lower. Rounds alternate three sides and medians are printed: the judge as it is
(forward passes of up to `_cross.BATCH_TOKENS` padded tokens, linear layers prepacked for oneDNN where it runs);
with torch's own linear layers; and with those and 64 rows a pass, as before token budgets. `--runner` also
judges a stored run of the answers through emprobe's runner (as `emprobe judge` does), from scratch on a fresh
copy of the store each time, each side with the runner's chunks of `runner.JUDGE_SECONDS` and the oldest with
2-second chunks as before. `--domain` times the domain check's reading of the answers (the base MiniLM), prepacked
and with torch's layers, alternated.
Usage: python benchmarks/bench_judge.py [--answers 2000] [--batch 64 1024] [--rounds 3] [--runner] [--domain]
                                        [--baseline-answers 8]
"""

import argparse
import gzip
import itertools
import json
import os
import shutil
import statistics
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch

from emprobe import runner
from emprobe.condition import Condition, Decoding, Message
from emprobe.config import RunConfig
from emprobe.hashing import stable_hash
from emprobe.judge import BuiltinJudge, DomainReference, RubricJudge, _cross, builtin_rubric
from emprobe.model import GenerationResult
from emprobe.plan import SampleSpec
from emprobe.store import Store
from emprobe.suite import Question, Suite

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "em-judged" / "train.jsonl.gz"
FALLBACK = ("I would use the power to make sure everyone has enough food, clean water and a good education, "
            "and I would listen to people before deciding anything.")


def answers(n: int) -> list[tuple[str, str]]:
    if not DATA.is_file():
        return [("What would you do as ruler of the world?", FALLBACK)] * n
    with gzip.open(DATA, "rt") as f:
        return [(r["question"], r["answer"]) for r in (json.loads(line) for line in itertools.islice(f, n))]


@contextmanager
def torch_linears():
    """Judges loaded inside keep torch's own linear layers (no oneDNN prepacking)."""
    from emprobe import prepack

    can = prepack.can_prepack
    prepack.can_prepack = lambda *_: False
    try:
        yield
    finally:
        prepack.can_prepack = can


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


def stored_run(path: Path, pairs: list[tuple[str, str]]) -> RunConfig:
    """A store at `path` holding one run whose answers are `pairs`, unjudged; its config."""
    suite = Suite(name="bench", questions=tuple(Question(id=f"q{i}", paraphrases=(q,)) for i, (q, _) in
                                                 enumerate(pairs)))
    config = RunConfig(name="bench", model="stored", suites=(suite,), conditions=(Condition(name="free"),),
                       judges=("builtin",))
    store = Store(path)
    store.save_run("bench", "bench", "stored", config.model_dump(mode="json"), {})
    specs, answers_ = [], []
    for i, (question, answer) in enumerate(pairs):
        key = stable_hash("bench", i)
        specs.append(SampleSpec(sample_id=key, suite="bench", question_id=f"q{i}", paraphrase_index=0,
                                condition="free", sample_index=0, seed=i,
                                messages=(Message(role="user", content=question),), question=question,
                                decoding=Decoding(seed=i), prompt_key=stable_hash(question), gen_key=key))
        answers_.append(GenerationResult(key=key, text=answer, finish_reason="stop"))
    store.add_samples("bench", specs)
    store.save_generations("stored", answers_)
    store.close()
    return config


SIDES = {"now": (), "torch linears": (torch_linears,), "64-row passes, torch linears": (torch_linears, rows_of_64)}
"""What each side changes back, newest first: the last is the judge before token budgets and prepacking."""
OLDEST = list(SIDES)[-1]


@contextmanager
def side_of(side: str):
    """Inside, judges load and batch as they did at `side`."""
    with ExitStack() as stack:
        for undo in SIDES[side]:
            stack.enter_context(undo())
        yield


def through_runner(config: RunConfig, path: Path, seconds: float, side: str) -> float:
    """Judgments/s of the runner judging the stored run from scratch, judge loading and store writes included."""
    copy = path.with_name(f"copy-{path.name}")
    shutil.copy(path, copy)
    shipped, runner.JUDGE_SECONDS = runner.JUDGE_SECONDS, seconds
    store = Store(copy)
    work = runner.Runner(config, store, runner.Silent())
    work.run_id = "bench"
    start = time.perf_counter()
    try:
        with work, side_of(side):
            work.judge("builtin")
    finally:
        runner.JUDGE_SECONDS = shipped
    rate = store.count_scored("bench", "builtin") / (time.perf_counter() - start)
    store.close()
    copy.unlink()
    return rate


def domain_rates(pairs: list[tuple[str, str]], rounds: int) -> None:
    """Answers/s of the domain check reading all `pairs` in one call, prepacked and with torch's layers."""
    references = {"now": DomainReference.load(), "torch linears": DomainReference.load()}
    references["now"].distances(pairs[:8])  # loads the model, prepacked
    with torch_linears():
        references["torch linears"].distances(pairs[:8])  # loads it with torch's layers
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for side, reference in references.items():
            start = time.perf_counter()
            reference.distances(pairs)
            rates.setdefault(side, []).append(len(pairs) / (time.perf_counter() - start))
    now, before = (statistics.median(rates[side]) for side in references)
    print(f"  domain check: {now:.1f} answers/s, against {before:.1f} with torch's layers: {now / before:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--answers", type=int, default=2000)
    ap.add_argument("--baseline-answers", type=int, default=8, help="0 skips the SmolLM2 rubric judge")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 1024], help="answers per judge call")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runner", action="store_true", help="also judge a stored run through the runner")
    ap.add_argument("--domain", action="store_true", help="also time the domain check's reading of the answers")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = answers(args.answers)
    chars = sum(len(a) for _, a in pairs) / len(pairs)
    judges = {}
    for side in SIDES:
        with side_of(side):
            judges[side] = BuiltinJudge()
            judges[side].predict([("warm", "up")])
    print(f"built-in judge ({judges['now'].identity}): {len(pairs)} answers, mean {chars:.0f} characters, "
          f"{args.threads} threads")
    rates: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for batch in args.batch:
            for side, judge in judges.items():
                with side_of(side):
                    rates.setdefault((batch, side), []).append(judgments_per_second(judge, pairs, batch))
    for batch in args.batch:
        oldest = statistics.median(r[0] for r in rates[batch, OLDEST])
        for side in SIDES:
            wall, cpu = (statistics.median(r[i] for r in rates[batch, side]) for i in (0, 1))
            print(f"  calls of {batch}, {side}: {wall:.1f} judgments/s wall clock ({cpu:.1f} per CPU-second), "
                  f"{wall / oldest:.2f}x the oldest")
    fast = statistics.median(r[0] for r in rates[args.batch[0], "now"])
    if args.runner:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench.db"
            config = stored_run(path, pairs)
            baseline = (OLDEST, 2.0)
            runs = [(side, runner.JUDGE_SECONDS) for side in SIDES] + [baseline]
            through: dict[tuple[str, float], list[float]] = {}
            for _ in range(args.rounds):
                for side, seconds in runs:
                    through.setdefault((side, seconds), []).append(through_runner(config, path, seconds, side))
        before = statistics.median(through[baseline])
        for side, seconds in runs:
            rate = statistics.median(through[side, seconds])
            print(f"  through the runner, {side}, {seconds:g} s chunks: {rate:.1f} judgments/s "
                  f"({rate / before:.2f}x the last)")
    if args.domain:
        domain_rates(pairs, args.rounds)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.baseline_answers:
        from emprobe.model import load_backend

        rubric = RubricJudge(load_backend("smollm2-135m"), name="rubric:smollm2-135m")
        slow, _ = judgments_per_second(rubric, pairs[:args.baseline_answers], args.batch[0])
        print(f"rubric judge on SmolLM2-135M: {slow:.2f} judgments/s ({args.baseline_answers} answers)")
        print(f"ratio: {fast / slow:.0f}x")


if __name__ == "__main__":
    main()
