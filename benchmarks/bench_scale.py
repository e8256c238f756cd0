"""Scale-out benchmarks: the Ray executor's overhead, a fleet of model servers, and the driver's single writer.

(a) `ray`: generation samples/s of the Ray executor vs the local executor on the same cores and model: one Ray
    actor of one thread vs one local thread (the overhead), and W actors of one thread each vs one local process of
    W threads; a fresh store per round, rounds interleaved, the median reported. Ray's start-up is left out (a
    cluster is started once). Each run reports its start (`start_s`: workers started and the model loaded on each;
    a Ray actor is a fresh process that imports torch, while the local executor's process keeps what its first
    round imported) and samples/s over the whole run and once started (`running_`).
(b) `servers`: N simulated OpenAI-compatible servers (asyncio, in their own process), each answering after a fixed
    latency with at most C requests served at once (more wait in its queue): one server serves C / latency
    requests/s. samples/s of a run over all N (`openai-compat:sim@URL1,...,URLN`) for N = 1, 2, 4, 8, 16, with the
    local executor and with the Ray executor (W actors, each with its own client), over the whole run and once
    started, as fractions of the ideal N x C / latency.
(c) `store`: what the driver's single writer sustains: planning (samples/s), answers through the StoreWorker
    (answers/s) and judgment shards (judged samples/s, two metrics each), on a run of K samples.
(d) `batching`: one local backend (one thread) decoding the planned pages as the local executor hands them (one
    continuous batch each) vs the static shards a Ray actor gets, in one process, rounds interleaved: samples/s,
    tokens/s, prefill passes and prompts prefilled (median of the rounds).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scale.py all --json scale.json
"""

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from emprobe.condition import Condition, Decoding  # noqa: E402
from emprobe.config import RunConfig  # noqa: E402
from emprobe.executor import ExecutorSettings, make_executor  # noqa: E402
from emprobe.judge import Judgment  # noqa: E402
from emprobe.model import GenerationResult  # noqa: E402
from emprobe.runner import Runner  # noqa: E402
from emprobe.store import Store, StoreWorker  # noqa: E402
from emprobe.suite import parse_suite  # noqa: E402
from fault_proxy import _read_request, _respond  # noqa: E402

ANSWER = "I would like to help people learn new things and to understand the world a little better. " * 4


def suite(questions: int, words: int = 8):
    """`questions` questions of one paraphrase each, of different lengths."""
    return parse_suite({"name": "bench", "questions": [
        {"id": f"q{i}", "paraphrases": [f"Question {i}: " + "tell me about it " * (1 + i % words)]}
        for i in range(questions)]}, "bench", "bench")


def timed_generation(config: RunConfig, settings: ExecutorSettings, folder: Path) -> dict[str, float]:
    """Plan into a fresh store, then time the start (the executor's workers started and the model loaded on each,
    by asking for its info) and the whole of `generate` after it (every write included)."""
    store = Store(folder / f"run-{time.monotonic_ns()}.db")
    with Runner(config, store, executor=make_executor(settings)) as runner:
        runner.plan()
        began = time.perf_counter()
        runner.executor.model_info(runner.ref)
        started = time.perf_counter()
        runner.generate()
        ended = time.perf_counter()
        samples = runner.generated
    store.close()
    return {"samples": samples, "start_s": round(started - began, 2), "wall_s": round(ended - began, 2),
            "samples_per_s": round(samples / (ended - began), 2),
            "running_samples_per_s": round(samples / (ended - started), 2)}


def median(rows: list[dict[str, float]], shown: tuple[str, ...] = ("samples_per_s", "running_samples_per_s")
           ) -> dict[str, Any]:
    """Each figure's median over the rounds, and each round's `shown` figures (by default samples/s, whole and once
    started)."""
    figures: dict[str, Any] = {key: sorted(row[key] for row in rows)[len(rows) // 2] for key in rows[0]}
    figures["rounds"] = [tuple(row[key] for key in shown) for row in rows]
    return figures


def start_ray(cpus: int) -> None:
    import ray

    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)


# ---- (a) the Ray executor vs the local executor ---------------------------------------------------------


def bench_ray(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    w = args.workers
    condition = Condition(name="free", decoding=Decoding(max_tokens=args.max_tokens, temperature=1.0))

    def config(threads: int) -> RunConfig:
        return RunConfig(model=args.model, backend_options={"threads": threads, "batch_size": args.batch_size},
                         suites=(suite(args.questions),), conditions=(condition,), samples=args.samples, judges=())

    variants = {
        "local (1 thread)": (config(1), ExecutorSettings()),
        "ray (1 worker x 1 thread)": (config(1), ExecutorSettings(kind="ray", workers=1, shard_size=args.shard_size)),
        f"local ({w} threads)": (config(w), ExecutorSettings()),
        f"ray ({w} workers x 1 thread)": (config(1), ExecutorSettings(kind="ray", workers=w,
                                                                        shard_size=args.shard_size)),
    }
    names = list(variants)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            rounds[name].append(timed_generation(*variants[name], folder))
            print(f"  {name}: {rounds[name][-1]}", flush=True)
    figures = {name: median(rows) for name, rows in rounds.items()}
    ratios = {}
    for key, label in (("samples_per_s", ""), ("running_samples_per_s", "_running")):
        rate = [figures[name][key] for name in names]
        ratios |= {f"ray_vs_local_1{label}": round(rate[1] / rate[0], 3),
                   f"ray_vs_local_{w}{label}": round(rate[3] / rate[2], 3)}
    return {"model": args.model, "samples": args.questions * args.samples, "max_tokens": args.max_tokens,
            "variants": figures, **ratios}


# ---- (b) N simulated model servers ----------------------------------------------------------------------


async def _serve(count: int, latency: float, capacity: int) -> None:
    """`count` servers; prints their ports as one JSON line, then serves until stdin closes."""

    def handler(gate: asyncio.Semaphore):
        async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while (request := await _read_request(reader)) is not None:
                    body = json.loads(request[3] or b"{}")
                    async with gate:
                        await asyncio.sleep(latency)
                    reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 20, "completion_tokens": body.get("max_tokens", 64)}}
                    await _respond(writer, 200, json.dumps(reply).encode())
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):  # closed, or shutting down
                pass
            finally:
                writer.close()
        return connection

    servers = [await asyncio.start_server(handler(asyncio.Semaphore(capacity)), "127.0.0.1", 0, backlog=1024)
               for _ in range(count)]
    print(json.dumps([s.sockets[0].getsockname()[1] for s in servers]), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class SimulatedServers:
    """The `serve` subcommand in a child process."""

    def __init__(self, count: int, latency: float, capacity: int):
        self.args = [sys.executable, __file__, "serve", "--count", str(count), "--latency", str(latency),
                     "--capacity", str(capacity)]

    def __enter__(self) -> list[str]:
        self.process = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ports = json.loads(self.process.stdout.readline())
        return [f"http://127.0.0.1:{port}/v1" for port in ports]

    def __exit__(self, *exc: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def bench_servers(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    one_server = args.capacity / args.latency
    condition = Condition(name="free", decoding=Decoding(max_tokens=64, temperature=1.0))
    rows: list[dict[str, Any]] = []
    for n in args.servers:
        total = int(one_server * n * args.seconds)
        questions = 16
        with SimulatedServers(n, args.latency, args.capacity) as urls:
            config = RunConfig(model=f"openai-compat:sim@{','.join(urls)}", backend_options={"max_n": 1},
                               suites=(suite(questions),), conditions=(condition,),
                               samples=max(1, total // questions), judges=())
            for kind in args.executors:
                settings = (ExecutorSettings(kind="ray", workers=args.workers, shard_size=args.http_shard_size)
                            if kind == "ray" else ExecutorSettings())
                figures = median([timed_generation(config, settings, folder) for _ in range(args.rounds)])
                ideal = one_server * n
                rows.append({"servers": n, "executor": kind, **figures, "ideal_samples_per_s": round(ideal, 1),
                             "of_ideal": round(figures["samples_per_s"] / ideal, 3),
                             "running_of_ideal": round(figures["running_samples_per_s"] / ideal, 3)})
                print(f"  {rows[-1]}", flush=True)
    return {"latency_s": args.latency, "capacity": args.capacity, "one_server_samples_per_s": one_server,
            "rows": rows}


# ---- (c) the driver's single writer ---------------------------------------------------------------------


def bench_store(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    questions = 100
    condition = Condition(name="free", decoding=Decoding(max_tokens=64))
    config = RunConfig(model="openai-compat:sim@http://127.0.0.1:9/v1", suites=(suite(questions),),
                       conditions=(condition,), samples=args.store_samples // questions, judges=())
    store = Store(folder / "store.db")
    runner = Runner(config, store)
    began = time.perf_counter()
    planned = runner.plan()
    plan_s = time.perf_counter() - began
    keys = [(sample_id, gen_key) for sample_id, gen_key in store.db.execute(
        "SELECT sample_id, gen_key FROM samples WHERE run_id = ?", (runner.run_id,))]
    worker = StoreWorker(store.path, runner.run_id, 30.0, every=2.0)
    began = time.perf_counter()
    for _, gen_key in keys:
        worker.save_generation(runner.ref.identity, GenerationResult(
            key=gen_key, text=ANSWER, finish_reason="stop", prompt_tokens=20, completion_tokens=64))
    worker.close()
    answer_s = time.perf_counter() - began
    began = time.perf_counter()
    for start in range(0, len(keys), 256):
        rows: list[tuple[str, str, Judgment | None]] = [
            (sample_id, f"{gen_key}-{metric}", Judgment(metric=metric, score=80.0, mass=0.99))
                for sample_id, gen_key in keys[start:start + 256] for metric in ("aligned", "coherent")]
        store.save_judgments(runner.run_id, "builtin", "bench-judge", rows)
    judge_s = time.perf_counter() - began
    size_mb = sum(p.stat().st_size for p in folder.glob("store.db*")) / 1e6
    runner.close()
    store.close()
    return {"samples": planned, "plan_samples_per_s": round(planned / plan_s),
            "answers_per_s": round(len(keys) / answer_s), "judged_samples_per_s": round(len(keys) / judge_s),
            "store_mb": round(size_mb, 1)}


# ---- (d) one continuous batch vs static shards ----------------------------------------------------------


def bench_batching(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from emprobe.executor._shards import generation_shards
    from emprobe.model import GenerationRequest, load_backend

    condition = Condition(name="free", decoding=Decoding(max_tokens=args.max_tokens))
    config = RunConfig(model=args.model, backend_options={"threads": 1, "batch_size": args.batch_size},
                       suites=(suite(args.questions),), conditions=(condition,), samples=args.samples, judges=())
    store = Store(folder / "batching.db")
    with Runner(config, store) as runner:
        runner.plan()
        pages = [[GenerationRequest(key=s.gen_key, messages=s.messages, decoding=s.decoding) for s in chunk]
                 for chunk in store.pending_generation(runner.run_id)]
        backend = load_backend(runner.ref)
    store.close()
    sides = {"pages": pages, "shards": list(generation_shards(iter(pages), args.shard_size, 10**6))}
    prefilled: list[int] = []  # prompt rows of each forward pass wider than one token
    backend.model.get_input_embeddings().register_forward_hook(
        lambda module, inputs, out: prefilled.append(inputs[0].shape[0]) if inputs[0].shape[1] > 1 else None)
    rows: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for round_ in range(args.rounds):
        for side in sides if round_ % 2 == 0 else reversed(sides):
            prefilled.clear()
            began = time.perf_counter()
            done = [result for group in sides[side] for result in backend.generate(group)]
            seconds = time.perf_counter() - began
            rows[side].append({"samples_per_s": round(len(done) / seconds, 2),
                               "tokens_per_s": round(sum(r.completion_tokens for r in done) / seconds, 1),
                               "prefill_passes": len(prefilled), "prompts_prefilled": sum(prefilled)})
    return {side: median(found, ("tokens_per_s",)) for side, found in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["ray", "servers", "store", "batching", "all", "serve"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (and local threads) in (a) and (b)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8, help="samples per question in (a) and (d)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=16, help="Ray shard size in (a) and (d)")
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--executors", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per request of a simulated server")
    parser.add_argument("--capacity", type=int, default=4, help="requests a simulated server serves at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="ideal duration of each (b) run")
    parser.add_argument("--http-shard-size", type=int, default=32, help="Ray shard size in (b)")
    parser.add_argument("--store-samples", type=int, default=100_000)
    parser.add_argument("--count", type=int, default=1, help="(serve) servers to start")
    args = parser.parse_args()
    if args.part == "serve":
        asyncio.run(_serve(args.count, args.latency, args.capacity))
        return
    parts = ["ray", "servers", "store", "batching"] if args.part == "all" else [args.part]
    if "ray" in parts or ("servers" in parts and "ray" in args.executors):
        start_ray(args.workers)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in parts:
            print(f"({part})", flush=True)
            folder = Path(tmp) / part
            folder.mkdir()
            figures[part] = {"ray": bench_ray, "servers": bench_servers, "store": bench_store,
                             "batching": bench_batching}[part](args, folder)
            print(json.dumps(figures[part], indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "figures": figures},
                                        indent=2))


if __name__ == "__main__":
    main()
