"""Benchmark emprobe's HTTP client against a real OpenAI-compatible server (llama-cpp-python serving SmolLM2).

Compares completion tokens/s of: a plain sequential loop of requests; a plain thread pool at concurrency C (what
the server delivers at C); emprobe's backend at C and with its adaptive default. Client overhead is reported as
the fraction of wall time with no request in flight (the server idle because of the client) and the client
process's CPU time over wall time. Every variant sends the same requests with the same seeds.

    .venv/bin/python benchmarks/bench_http.py --requests 12 --max-tokens 32 --concurrency 4 --rounds 3
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from emprobe.condition import Decoding, Message  # noqa: E402
from emprobe.model import GenerationRequest, load_backend  # noqa: E402
from emprobe.model._providers.openai_compat import OpenAICompatBackend  # noqa: E402
from openai_server import LlamaServer, missing_reason  # noqa: E402

PROMPTS = ["Tell me about the sea.", "What should I cook tonight?", "Describe your ideal day.",
           "Give me advice on saving money.", "What do you think about robots?", "Write two lines about rain."]


def requests_for(count: int, max_tokens: int) -> list[GenerationRequest]:
    return [GenerationRequest(key=f"r{i}", messages=(Message(role="user", content=PROMPTS[i % len(PROMPTS)]),),
                              decoding=Decoding(temperature=1.0, max_tokens=max_tokens, seed=1000 + i))
            for i in range(count)]


def body_for(request: GenerationRequest, model: str) -> dict:
    d = request.decoding
    return {"model": model, "messages": [m.model_dump() for m in request.messages], "max_tokens": d.max_tokens,
            "temperature": d.temperature, "seed": d.seed}


def plain(base_url: str, model: str, requests: list[GenerationRequest], workers: int) -> dict:
    """A plain httpx loop (workers = 1) or thread pool: the reference for what the server delivers."""
    client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=workers))

    def one(request: GenerationRequest) -> int:
        reply = client.post(f"{base_url}/chat/completions", json=body_for(request, model))
        reply.raise_for_status()
        return reply.json()["usage"]["completion_tokens"]

    started, cpu = time.perf_counter(), time.process_time()
    if workers == 1:
        tokens = sum(one(r) for r in requests)
    else:
        with ThreadPoolExecutor(workers) as pool:
            tokens = sum(pool.map(one, requests))
    wall = time.perf_counter() - started
    client.close()
    return {"tokens": tokens, "wall_s": wall, "cpu_s": time.process_time() - cpu}


def emprobe_client(base_url: str, model: str, requests: list[GenerationRequest], concurrency: int | None) -> dict:
    """emprobe's backend; samples its in-flight count every millisecond to find the client's idle gaps."""
    options: dict[str, Any] = {"concurrency": concurrency} if concurrency else {}
    backend = load_backend(f"openai-compat:{model}@{base_url}", max_n=1, **options)
    assert isinstance(backend, OpenAICompatBackend)
    idle, samples, running = [0], [0], [True]

    def watch() -> None:
        while running[0]:
            samples[0] += 1
            idle[0] += backend.client.stats.in_flight == 0
            time.sleep(0.001)

    watcher = threading.Thread(target=watch, daemon=True)
    started, cpu = time.perf_counter(), time.process_time()
    watcher.start()
    results = list(backend.generate(requests))
    wall = time.perf_counter() - started
    running[0] = False
    watcher.join()
    cpu_s = time.process_time() - cpu
    limit = backend.client.fleet.limit()
    backend.close()
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return {"tokens": sum(r.completion_tokens for r in results), "wall_s": wall, "cpu_s": cpu_s,
            "idle_fraction": idle[0] / max(1, samples[0]), "final_limit": limit}


def median_round(rows: list[dict]) -> dict:
    """The round with the median tokens/s, with every round's tokens/s beside it."""
    for row in rows:
        row["tokens_per_s"] = row["tokens"] / row["wall_s"]
        row["client_cpu_fraction"] = row["cpu_s"] / row["wall_s"]
    ordered = sorted(rows, key=lambda row: row["tokens_per_s"])
    return {**ordered[len(ordered) // 2], "rounds_tokens_per_s": [round(r["tokens_per_s"], 2) for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="the server's threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if missing_reason():
        sys.exit(missing_reason())
    requests = requests_for(args.requests, args.max_tokens)
    c = args.concurrency
    variants = {
        "sequential": lambda url, model: plain(url, model, requests, 1),
        f"plain_pool_c{c}": lambda url, model: plain(url, model, requests, c),
        f"emprobe_c{c}": lambda url, model: emprobe_client(url, model, requests, c),
        "emprobe_adaptive": lambda url, model: emprobe_client(url, model, requests, None),
    }
    rounds: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, LlamaServer(Path(tmp) / "server.log", threads=args.threads) as server:
        plain(server.base_url, server.MODEL, requests[:2], 1)  # warm up
        for r in range(args.rounds):  # interleaved, so a slow spell on the machine hits every variant
            for name in list(variants)[r % 2 :] + list(variants)[: r % 2]:
                rounds[name].append(variants[name](server.base_url, server.MODEL))
    figures = {name: median_round(rows) for name, rows in rounds.items()}
    base = figures["sequential"]["tokens_per_s"]
    pool = figures[f"plain_pool_c{c}"]["tokens_per_s"]
    print(f"{'variant':<22}{'tokens':>8}{'wall s':>9}{'tok/s':>9}{'vs seq':>8}{'vs pool':>9}{'idle':>7}{'cpu':>7}")
    for name, row in figures.items():
        print(f"{name:<22}{row['tokens']:>8}{row['wall_s']:>9.2f}{row['tokens_per_s']:>9.1f}"
              f"{row['tokens_per_s'] / base:>8.3f}{row['tokens_per_s'] / pool:>9.3f}"
              f"{row.get('idle_fraction', float('nan')):>7.3f}{row['client_cpu_fraction']:>7.3f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "figures": figures},
                                        indent=2))


if __name__ == "__main__":
    main()
