"""The pipeline's own cost: overhead around generation, and memory as runs grow.

1. Overhead: a real run (plan, store, generate, flush) on the given model, with the time spent inside the
   backend's `generate` measured separately; overhead = the rest, as a share of the run's wall time.
2. Memory: plan, store and stream a large run (default 200,000 samples) with a fake answer per sample,
   without loading any model; prints peak RSS of a fresh process.
Usage: python benchmarks/bench_pipeline.py [--model smollm2-135m] [--samples 2] [--big 200000]
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emprobe.condition import Decoding, resolve_conditions
from emprobe.config import RunConfig
from emprobe.model import BackendEntry, GenerationResult, load_backend, register_backend, resolve
from emprobe.runner import Runner
from emprobe.store import Store
from emprobe.suite import load_suite


class TimedBackend:
    """Delegates to a backend and adds up the wall time spent inside its generate iterator."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        self.identity, self.info = inner.identity, inner.info

    def generate(self, requests):
        requests = list(requests)
        it = iter(self.inner.generate(requests))
        while True:
            start = time.perf_counter()
            try:
                result = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield result

    def close(self) -> None:
        self.inner.close()


TIMED: list[TimedBackend] = []


def _timed(ref) -> TimedBackend:
    TIMED.append(TimedBackend(load_backend(ref.name)))
    return TIMED[-1]


# `timed:MODEL` wraps MODEL's backend with a stopwatch; `fake:NAME` plans without any model behind it.
register_backend("timed", BackendEntry(load=_timed, identity=lambda name, adapter: (resolve(name).identity, None)))
register_backend("fake", BackendEntry(load=lambda ref: None, identity=lambda name, adapter: ("fake-model", None)))


def overhead(model: str, samples: int, folder: Path) -> None:
    config = RunConfig(model=f"timed:{model}", suites=(load_suite("core"),), samples=samples, judges=(),
                       conditions=tuple(resolve_conditions(["free"], Decoding(max_tokens=64))))
    store = Store(folder / "overhead.db")
    with Runner(config, store) as runner:
        start = time.perf_counter()
        runner.plan()
        runner.generate()
        wall = time.perf_counter() - start
    timed = TIMED[0]
    n = store.count(runner.run_id)["generated"]
    print(f"overhead: {n} samples, run {wall:.1f} s, inside backend.generate {timed.seconds:.1f} s, "
          f"pipeline overhead {(wall - timed.seconds) / wall:.2%} of wall time")


def memory(big: int, folder: Path) -> None:
    """Plan + store + stream `big` samples in this process; report peak RSS."""
    suite = load_suite("core")
    per = -(-big // sum(len(q.paraphrases) for q in suite.questions))
    config = RunConfig(model="fake:model", suites=(suite,), samples=per, judges=(),
                       conditions=tuple(resolve_conditions(["free"])))
    store = Store(folder / "memory.db")
    runner = Runner(config, store)  # plans and stores only: the fake model is never loaded
    start = time.perf_counter()
    from emprobe.runner import versions  # noqa: F401  (imported by plan(); keep its cost out of the timing)

    added = runner.plan()
    planned = time.perf_counter() - start
    streamed = 0
    for chunk in store.pending_generation(runner.run_id, chunk=4096):
        store.save_generations("fake", [GenerationResult(key=s.gen_key, text="x" * 400, finish_reason="stop",
                                                         completion_tokens=100) for s in chunk])
        streamed += len(chunk)
    total = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory: planned {added} samples in {planned:.1f} s ({added / planned:,.0f}/s), stored answers for "
          f"{streamed} in {total - planned:.1f} s; peak RSS {rss:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--samples", type=int, default=2, help="samples per paraphrase for the overhead run")
    parser.add_argument("--big", type=int, default=200_000)
    parser.add_argument("--memory-only", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory_only:
            memory(args.big, Path(tmp))
            return
        # Memory in a fresh process, so its peak RSS is not the model's.
        subprocess.run([sys.executable, __file__, "--memory-only", "--big", str(args.big)], check=True)
        overhead(args.model, args.samples, Path(tmp))


if __name__ == "__main__":
    main()
