"""The linear layers of one decode step: torch's `nn.Linear` against emprobe's prepacked layers (siblings of one
input in one matmul), on the model's own weights, at a decode batch's rows.

Each side calls every linear layer of the model once per step, in the model's order, on a random input of
`rows` rows (siblings on the same input, as the model calls them). Sides alternate step by step in this process;
medians are printed. Usage:
    python benchmarks/bench_linear.py [--model smollm2-135m] [--dtype bfloat16] [--rows 64,256] [--steps 15]
"""

import argparse
import copy
import statistics
import time
from typing import Any

import torch
from torch import nn

from emprobe.model import load_backend
from emprobe.prepack import PackedLinear, prepack


def step_of(model: Any, rows: int, dtype: torch.dtype) -> Any:
    """A function calling each linear layer (plain or prepacked) once, one input per parent module and width."""
    calls = []
    for parent in model.modules():
        inputs: dict[int, torch.Tensor] = {}
        for child in parent.children():
            if isinstance(child, nn.Linear | PackedLinear):
                x = inputs.setdefault(child.in_features, torch.randn(rows, child.in_features, dtype=dtype))
                calls.append((child, x))

    def step() -> None:
        for layer, x in calls:
            layer(x)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--rows", default="64,256")
    parser.add_argument("--steps", type=int, default=15)
    args = parser.parse_args()
    plain = load_backend(args.model, dtype=args.dtype, batch_size=64, prepack=False).model
    packed = copy.deepcopy(plain)
    prepack(packed)
    dtype = getattr(torch, args.dtype)
    for rows in (int(r) for r in args.rows.split(",")):
        sides = {"torch nn.Linear": step_of(plain, rows, dtype),
                 "prepacked, siblings fused": step_of(packed, rows, dtype)}
        times: dict[str, list[float]] = {side: [] for side in sides}
        with torch.inference_mode():
            for step in sides.values():
                step()
            for _ in range(args.steps):
                for side, step in sides.items():
                    start = time.perf_counter()
                    step()
                    times[side].append(time.perf_counter() - start)
        base = statistics.median(times["torch nn.Linear"])
        for side, values in times.items():
            median = statistics.median(values)
            print(f"{args.dtype} {rows:4d} rows  {side:26s} {median * 1e3:7.1f} ms a step  {base / median:5.2f}x")


if __name__ == "__main__":
    main()
