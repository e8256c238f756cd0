"""One decode step of the local backend with emprobe's attention against transformers' SDPA in the same row blocks
(which stacks a key/value head's query heads into rows when there is a mask), against torch's grouped-query SDPA
(what emprobe used in float32 before its two batched matmuls) and against those two matmuls (what it used before its
one-pass kernel), alternated in one process.

The step runs the backend's own forward pass on a cache filled with random keys and values, rows left-padded to
random lengths as the decode loop leaves them, with the loop's row blocks. Usage:
    python benchmarks/bench_decode_step.py [--model smollm2-135m] [--dtype float32] [--rows 128] [--columns 160]
        [--rounds 8] [--steps 4]
"""

import argparse
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from emprobe.model import load_backend
from emprobe.model._providers import _attention
from emprobe.model._providers._calibrate import random_cache


def transformers_blocks(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, *args: Any,
                        row_blocks: list[tuple[int, int, int]] | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The baseline: transformers' SDPA, per row block over that block's columns when the loop gives blocks."""
    if not row_blocks or len(row_blocks) < 2 or query.shape[2] != 1 or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    return torch.cat([sdpa_attention_forward(module, query[a:b], key[a:b, :, c:], value[a:b, :, c:],
                                             attention_mask[a:b, ..., c:], *args, **kwargs)[0]
                      for a, b, c in row_blocks]), None


@contextmanager
def without_onepass(step: Any = None) -> Iterator[None]:
    """emprobe's attention with no one-pass kernel, its float32 row blocks read by `step` (default: two matmuls)."""
    kept = _attention.matmul_step, _attention._onepass
    _attention.matmul_step, _attention._onepass = step or _attention.matmul_step, lambda: None
    try:
        yield
    finally:
        _attention.matmul_step, _attention._onepass = kept


def grouped_sdpa(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """emprobe's attention with torch's SDPA in float32 too, as before `matmul_step`."""
    with without_onepass(_attention.sdpa_step):
        return _attention.blocked_sdpa(*args, **kwargs)


def two_matmuls(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """emprobe's attention in row blocks of two batched matmuls, as before `onepass_step`."""
    with without_onepass():
        return _attention.blocked_sdpa(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--columns", type=int, default=160, help="cached positions of the longest row")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side and round")
    args = parser.parse_args()
    backend = load_backend(args.model, dtype=args.dtype, batch_size=args.rows)
    if not backend.blocked_attention:
        raise SystemExit(f"{args.model} on {backend.device}: the decode loop does not use emprobe's attention here")
    config = backend.model.config.get_text_config()
    rows, columns = args.rows, args.columns
    baseline = "transformers' SDPA in row blocks"
    sides = {baseline: transformers_blocks, "torch's SDPA, grouped heads": grouped_sdpa,
             "two batched matmuls": two_matmuls, "emprobe": _attention.blocked_sdpa}
    noise = torch.Generator().manual_seed(0)
    cache = random_cache(backend.model, rows, columns, columns + len(sides) * args.rounds * (args.steps + 1), noise)
    tokens = torch.randint(0, config.vocab_size, (rows, 1), generator=noise)
    lengths = torch.randint(columns // 3, columns, (rows,), generator=noise)
    lengths[::7] = columns  # some rows span the whole cache, as the oldest rows do

    def step() -> float:
        grown = cache.get_seq_length() + 1 - columns
        width, used = columns + grown, lengths + grown
        mask = torch.arange(width) >= (width - used)[:, None]
        blocks = _attention.row_blocks(used, torch.ones(rows, dtype=torch.bool), width)
        start = time.perf_counter()
        with torch.inference_mode():
            backend._forward(cache, input_ids=tokens, attention_mask=mask.long(), position_ids=(used - 1)[:, None],
                             use_cache=True, row_blocks=blocks)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in sides}
    try:
        for _ in range(args.rounds):
            for name, attend in sides.items():
                AttentionInterface.register(_attention.NAME, attend)
                step()  # warm
                times[name] += [step() for _ in range(args.steps)]
    finally:
        AttentionInterface.register(_attention.NAME, _attention.blocked_sdpa)
    print(f"{args.model} {backend.info['dtype']} on {backend.device}, {backend.info['threads']} threads: {rows} rows, "
          f"{columns}+ columns, {args.rounds} rounds of {args.steps} steps")
    base = statistics.median(times[baseline])
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:34s} median {median * 1e3:7.1f} ms  best {min(seconds) * 1e3:7.1f} ms  "
              f"{rows / median:6.1f} tok/s  speed-up {base / median:5.2f}x")


if __name__ == "__main__":
    main()
