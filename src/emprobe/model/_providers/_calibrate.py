"""Choose the local backend's decode batch by measurement: time a few decode steps at growing batch sizes and
keep the size past which throughput stops growing. The choice is cached per model, numerics, threads and device."""

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from emprobe.hashing import stable_hash
from emprobe.model._providers._decode import BufferedCache, Forward
from emprobe.model._resolve import cache_dir
from emprobe.system import available_memory

log = logging.getLogger("emprobe.calibrate")
SIZES = (16, 32, 64, 128, 256, 512, 1024)
CONTEXT = 160
"""Cached positions per row while timing: a typical prompt plus half of a typical answer."""
GAIN = 1.08
"""A size is worth doubling to only if the doubled batch generates this much faster."""
FALLBACK = 64
METHOD = 3
"""Part of the cache key: choices made by an earlier way of measuring are measured again (2: re-timing a size that
seems not to pay; 3: steps over every column, whose mask transformers drops, run the decode loop's kernel)."""


def calibration_path(identity: str, device: str, threads: int) -> Path:
    """Where the choice for this model, numerics, thread count and processor is kept."""
    processor = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    key = stable_hash([identity, device, threads, processor, torch.__version__, METHOD])
    return cache_dir() / "calibration" / f"{key}.json"


def calibrated_batch(forward: Forward, model: Any, identity: str, device: str, threads: int,
                     max_tokens: int = 512) -> int:
    """The cached batch size for this model (`forward` runs it with a cache), measured now if there is none."""
    path = calibration_path(identity, device, threads)
    try:
        return int(json.loads(path.read_text())["batch_size"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        rates = measure(forward, model, device, _memory_cap(model, device, max_tokens))
    except (RuntimeError, ValueError, TypeError, AttributeError, IndexError) as err:  # a cache layout it cannot fake
        log.warning("could not measure the batch size (%s: %s); using %d", type(err).__name__, err, FALLBACK)
        return FALLBACK
    best = choose(rates)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps({"batch_size": best, "tokens_per_s": {str(k): round(v, 1) for k, v in rates.items()},
                                   "context": CONTEXT, "identity": identity, "device": device, "threads": threads}))
    partial.replace(path)
    return best


def choose(rates: dict[int, float]) -> int:
    """The first size whose double does not generate `GAIN` times faster."""
    sizes = sorted(rates)
    for size, bigger in zip(sizes, sizes[1:], strict=False):
        if rates[bigger] < GAIN * rates[size]:
            return size
    return sizes[-1] if sizes else FALLBACK


@torch.inference_mode()
def measure(forward: Forward, model: Any, device: str, cap: int) -> dict[int, float]:
    """Decode tokens per second at each size up to `cap`, stopping once doubling stops paying. A size that seems
    not to pay is timed again with its half before stopping: a busy neighbour can slow one size's few steps (on
    a shared 2-core EPYC, 128 rows once measured 20% below 64 and later 1.3x above it)."""
    rates: dict[int, float] = {}
    for size in (s for s in SIZES if s <= max(cap, SIZES[0])):
        rates[size] = _rate(forward, model, device, size)
        if len(rates) > 1 and rates[size] < GAIN * rates[size // 2]:
            for retimed in (size // 2, size):
                rates[retimed] = max(rates[retimed], _rate(forward, model, device, retimed))
            if rates[size] < GAIN * rates[size // 2]:
                break
    return rates


def _rate(forward: Forward, model: Any, device: str, size: int) -> float:
    """Decode tokens per second at `size` rows over `CONTEXT` cached positions: the best of three steps, warm."""
    config = model.config.get_text_config()
    noise = torch.Generator(device=device).manual_seed(0)  # leaves the caller's random state alone
    cache = random_cache(model, size, CONTEXT, CONTEXT + 4, noise)
    tokens = torch.randint(0, config.vocab_size, (size, 1), device=device, generator=noise)
    seconds = []
    for step in range(4):
        width = CONTEXT + step + 1
        mask = torch.ones((size, width), dtype=torch.long, device=device)
        positions = torch.full((size, 1), width - 1, device=device)
        start = time.perf_counter()
        logits = forward(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True,
                         cache=cache).logits
        logits[:, -1].argmax(-1).cpu()  # waits for the device
        seconds.append(time.perf_counter() - start)
    return size / min(seconds[1:])


def random_cache(model: Any, rows: int, context: int, capacity: int, noise: torch.Generator) -> BufferedCache:
    """A decode cache of `rows` rows holding `context` random positions (keys equal to values), room for `capacity`,
    in the model's dtype on `noise`'s device."""
    config = model.config.get_text_config()
    heads, head_dim = kv_shape(config)
    dtype = next(model.parameters()).dtype
    cache = BufferedCache(config.num_hidden_layers, capacity)
    for index, layer in enumerate(cache.buffers):
        kv = torch.randn(rows, heads, context, head_dim, dtype=dtype, device=noise.device, generator=noise)
        layer.update(kv, kv, index)
    return cache


def _memory_cap(model: Any, device: str, max_tokens: int) -> int:
    """The largest batch whose KV cache, for a 256-token prompt plus `max_tokens`, fits in a quarter of the free
    memory (twice over on a CPU, where the decode loop keeps the buffers a rebuild replaced: `BufferedLayer.spare`)."""
    config = model.config.get_text_config()
    heads, head_dim = kv_shape(config)
    width = next(model.parameters()).element_size()
    copies = 2 if device == "cpu" else 1
    per_row = copies * 2 * config.num_hidden_layers * heads * head_dim * (256 + max_tokens) * width
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else available_memory()
    return max(1, free // 4 // per_row)


def kv_shape(config: Any) -> tuple[int, int]:
    """(key-value heads, head width) of a decoder config."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return heads, getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
