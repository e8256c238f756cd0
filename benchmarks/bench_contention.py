"""Generation beside a busy neighbour: all cores (the old default) vs the free cores emprobe now picks.

One process, the same model, prompts and seeds for every setting; a second process spins on one core for the
"busy" rows. Prints tokens/s and the ratio to the same setting alone. Usage:
    python benchmarks/bench_contention.py [--model smollm2-135m] [--prompts 16] [--tokens 48]
"""

import argparse
import multiprocessing
import os
import sys
import time

from emprobe.model import load_backend
from emprobe.system import free_cpus

sys.path.insert(0, os.path.dirname(__file__))
from bench_generate import workload  # noqa: E402


def spin(stop) -> None:
    while not stop.is_set():
        pass


def rate(model: str, threads: int, n: int, tokens: int) -> float:
    backend = load_backend(model, batch_size=n, threads=threads)
    requests = workload("core", 1, n, tokens)  # n distinct prompts, one sample each
    start = time.perf_counter()
    done = sum(r.completion_tokens for r in backend.generate(requests))
    backend.close()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    alone = {t: rate(args.model, t, args.prompts, args.tokens) for t in (cores, free_cpus())}
    stop = multiprocessing.Event()
    neighbour = multiprocessing.Process(target=spin, args=(stop,))
    neighbour.start()
    try:
        time.sleep(1.0)
        picked = free_cpus()
        busy = {"all cores": (cores, rate(args.model, cores, args.prompts, args.tokens)),
                "free cores": (picked, rate(args.model, picked, args.prompts, args.tokens))}
    finally:
        stop.set()
        neighbour.join()
    base = alone[cores]
    print(f"alone, {cores} threads: {base:.1f} tok/s")
    for name, (threads, tps) in busy.items():
        print(f"beside a busy process, {name} ({threads} threads): {tps:.1f} tok/s = {tps / base:.2f}x alone")


if __name__ == "__main__":
    main()
