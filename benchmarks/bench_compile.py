"""torch.compile (inductor, weights frozen and prepacked) against emprobe's eager decode with prepacked linear layers,
on the model's own weights, at a decode batch's rows.

Two measures, sides alternated round by round in this process, medians printed with ratios to the prepacked side:
- every layer's norm, MLP and residual (the step's largest block) on one token per row: torch's layers, emprobe's
  prepacked ones, and the block compiled per layer;
- a whole one-token decode step over a static cache holding `--context` positions: eager with prepacked layers against
  the forward pass compiled (the compile's time is printed; the cache is written in place at one position).
Usage:
    python benchmarks/bench_compile.py [--model smollm2-135m] [--dtype float32] [--rows 64] [--context 96] [--skip-step]
"""

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
import torch._inductor.config
from transformers import StaticCache

from emprobe.model import load_backend
from emprobe.prepack import prepack


def compiled(function: Callable) -> Callable:
    """`function` compiled for fixed shapes, with the weights frozen into the graph (inductor prepacks them)."""
    torch._inductor.config.freezing = True
    torch._dynamo.config.recompile_limit = 64  # one graph per layer in the block measure
    torch._dynamo.config.accumulated_recompile_limit = 256
    return torch.compile(function, dynamic=False)


def timed(sides: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each side, sides alternated round by round after one warm call each."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    for call in sides.values():
        call()
    for _ in range(rounds):
        for side, call in sides.items():
            start = time.perf_counter()
            call()
            times[side].append(time.perf_counter() - start)
    return {side: statistics.median(t) for side, t in times.items()}


def report(title: str, medians: dict[str, float], baseline: str) -> None:
    print(title)
    for side, seconds in medians.items():
        print(f"  {side:34s} {seconds * 1e3:8.1f} ms   {medians[baseline] / seconds:5.2f}x the {baseline}")


def block(layer: Any, hidden: torch.Tensor) -> torch.Tensor:
    """A decoder layer's second half: norm, MLP, residual."""
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def blocks(plain: Any, packed: Any, rows: int, dtype: torch.dtype, rounds: int) -> None:
    hidden = torch.randn(rows, 1, plain.config.hidden_size, dtype=dtype)
    started = time.time()
    fused = compiled(block)
    for layer in plain.model.layers:
        fused(layer, hidden)
    print(f"compiled {len(plain.model.layers)} blocks in {time.time() - started:.0f} s")
    config = plain.config
    flops = 2 * rows * config.hidden_size * config.intermediate_size * 3 * config.num_hidden_layers
    medians = timed({"torch's layers": lambda: [block(layer, hidden) for layer in plain.model.layers],
                     "prepacked (emprobe)": lambda: [block(layer, hidden) for layer in packed.model.layers],
                     "compiled": lambda: [fused(layer, hidden) for layer in plain.model.layers]}, rounds)
    report(f"norm + MLP + residual of every layer, {rows} rows ({flops / 1e9:.2f} GFLOP):", medians,
           "prepacked (emprobe)")


def steps(plain: Any, packed: Any, rows: int, context: int, rounds: int) -> None:
    sides: dict[str, Callable[[], Any]] = {}
    for side, net in (("eager, prepacked (emprobe)", packed), ("compiled", plain)):
        cache = StaticCache(config=net.config, max_cache_len=context + 32)
        net(input_ids=torch.randint(0, 1000, (rows, context)), cache=cache, use_cache=True,
            cache_position=torch.arange(context))
        forward = compiled(net.forward) if side == "compiled" else net.forward
        token, position = torch.randint(0, 1000, (rows, 1)), torch.tensor([context])
        sides[side] = (lambda forward=forward, cache=cache, token=token, position=position: forward(
            input_ids=token, cache=cache, use_cache=True, cache_position=position,
            position_ids=position.expand(rows, 1)).logits)
    started = time.time()
    sides["compiled"]()
    print(f"compiled the decode step in {time.time() - started:.0f} s")
    report(f"one-token decode step, {rows} rows, {context} positions in a static cache:", timed(sides, rounds),
           "eager, prepacked (emprobe)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--context", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--skip-step", action="store_true", help="only the norm + MLP blocks")
    args = parser.parse_args()
    backend = load_backend(args.model, dtype=args.dtype, batch_size=64, prepack=False)
    print(f"{args.model}, {args.dtype} on {backend.device}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    packed = copy.deepcopy(backend.model)
    prepack(packed)
    with torch.no_grad():  # not inference mode: compiled graphs update the cache in place
        blocks(backend.model, packed, args.rows, backend.dtype, args.rounds)
        if not args.skip_step:
            steps(backend.model, packed, args.rows, args.context, args.rounds)


if __name__ == "__main__":
    main()
