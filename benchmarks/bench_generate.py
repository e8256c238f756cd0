"""Generation throughput against the hardware's limit: emprobe's backend (CPU linear weights prepacked, and with
torch's own linear layers; attention in row blocks, and over every column; on a CPU, decode steps in one pass (its
inner loops as vector code where the CPU has AVX-512, and as numba loops; rows of one prompt reading one copy of it,
and each its own), and without it: two batched matmuls in float32, torch's SDPA in bfloat16; on a CPU, RMSNorm and
the sampler's draw compiled, and by torch's operations; on a CPU, decode steps fused, and by transformers' forward
pass; fused steps computing only live rows, and every row; on CUDA, attention kernels as emprobe limits them and as
torch chooses) vs one `model.generate` call per batch (what peer harnesses do) vs one `model.generate` per prompt
(what research scripts do).

All sides run in this process on the same model, requests and settings (sampling at temperature 1, top_p 1,
top_k 0), interleaved round by round, and count the tokens they really generated. The roofline comes from matmuls
of this model's own shapes timed in the same process, before and after the rounds (the faster counts: a busy
neighbour during one timing must not lower the bar). Usage:
    python benchmarks/bench_generate.py [--model smollm2-135m] [--dtypes bfloat16,float32]
        [--suite core] [--samples 8] [--limit 64] [--max-tokens 128] [--batch-size 64] [--naive-prompts 4]
The default is 8 prompts x 8 samples, 128 tokens. The larger workload of issue 11 is
    --suite ../shared/data/emergent-misalignment/first_plot_questions.yaml --samples 40 --limit 0 --max-tokens 200
`--batch-size auto` lets the backend choose (its cached calibration). `--lanes 2` adds emprobe as two decode loops in
two threads, each with half the cores and a batch of its own. `--profile` then runs emprobe once more, 32 tokens
a sample, under torch's profiler and prints the operations it spends its time in (host time; device time on a GPU).
"""

import argparse
import threading
import time
from typing import Any
from unittest.mock import patch

import torch
from bench_decode_step import without_onepass  # this folder: run as a script

from emprobe.condition import PRESETS, Decoding
from emprobe.model import GenerationRequest, load_backend
from emprobe.model._providers import _attention, _decode
from emprobe.model._providers._calibrate import kv_shape
from emprobe.model._providers._compiled import kernel
from emprobe.plan import plan_samples
from emprobe.prepack import can_prepack
from emprobe.suite import load_suite


def workload(suite: str, samples: int, limit: int, max_tokens: int) -> list[GenerationRequest]:
    """The first `limit` samples (0: all) of `suite` under the free format, `samples` per paraphrase."""
    specs = plan_samples([load_suite(suite)], [PRESETS["free"]], "bench", samples=samples)
    out = [GenerationRequest(key=s.gen_key, messages=s.messages, decoding=Decoding(max_tokens=max_tokens, seed=s.seed))
           for s in specs]
    return out[:limit] if limit else out


def emprobe_side(backend: Any, requests: list[GenerationRequest]) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(r.completion_tokens for r in backend.generate(requests))
    return tokens, time.perf_counter() - start


def side_with(backend: Any, requests: list[GenerationRequest], owner: Any, name: str, value: Any
              ) -> tuple[int, float]:
    """emprobe with `owner.name` set to `value` for this run: one of the backend's settings (`blocked_attention`
    False: attention over every column; `attention_kernels` None: torch's own choice, on CUDA cuDNN's among them;
    `step` None: transformers' forward pass at decode steps) or a module's kernel."""
    with patch.object(owner, name, value):
        return emprobe_side(backend, requests)


def matmuls_side(backend: Any, requests: list[GenerationRequest]) -> tuple[int, float]:
    """emprobe's decode steps without the one-pass kernel, in row blocks: two batched matmuls in float32, torch's SDPA
    in bfloat16 (as before the kernel read each precision); transformers' steps, as the fused step always takes it."""
    with without_onepass():
        return side_with(backend, requests, backend, "step", None)


def _onepass() -> Any:
    """The one-pass kernel's module (numba imports where this is called)."""
    from emprobe.model._providers import _onepass as module

    return module


def own_copies(batch: Any, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """In place of `ContinuousBatch.shared_prompts`: every row reads its own copy of its prompt."""
    rows = len(batch.lengths)
    return torch.arange(rows), torch.zeros(rows, dtype=torch.long)


def every_row(init: Any) -> Any:
    """In place of `ContinuousBatch.__init__` (`init`): a loop whose steps compute every row, finished ones too,
    and whose tail is rebuilt smaller (as before fused steps took `live_rows`)."""
    return lambda self, *args, **kwargs: init(self, *args, **{**kwargs, "skips": False})


def lanes_side(backend: Any, requests: list[GenerationRequest], lanes: int) -> tuple[int, float]:
    """emprobe's loop in `lanes` Python threads at once, each on its share of the prompts (all samples of a prompt in
    one lane) with the cores split among them: independent decode loops instead of one loop's threads sharing
    every operation (CPU only; torch's operations release the GIL)."""
    groups: dict[Any, list[GenerationRequest]] = {}
    for request in requests:
        groups.setdefault(request.messages, []).append(request)
    shares: list[list[GenerationRequest]] = [[] for _ in range(lanes)]
    for group in sorted(groups.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    tokens = [0] * lanes

    def lane(i: int) -> None:
        torch.set_num_threads(max(1, backend.threads // lanes))
        tokens[i] = sum(r.completion_tokens for r in backend.generate(shares[i]))

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(lanes)]
    start = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        torch.set_num_threads(backend.threads)
    return sum(tokens), time.perf_counter() - start


def hf_generate(backend: Any, requests: list[GenerationRequest], batch: int) -> tuple[int, float]:
    """`model.generate` over left-padded batches of `batch` requests, HF sampling, stop at EOS."""
    tok, model = backend.tokenizer, backend.model
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token_id = backend.pad_id
    texts = [backend.chat_text(r.messages) for r in requests]
    max_new = requests[0].decoding.max_tokens
    start, tokens = time.perf_counter(), 0
    for i in range(0, len(texts), batch):
        ids = tok(texts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids.to(backend.device), max_new_tokens=max_new, do_sample=True, temperature=1.0,
                                 top_p=1.0, top_k=0, pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids)
        new = out[:, ids["input_ids"].shape[1] :]
        for row in new.tolist():  # tokens up to and including the first EOS
            stop = next((j for j, t in enumerate(row) if t in backend.eos_ids), len(row) - 1)
            tokens += stop + 1
    return tokens, time.perf_counter() - start


def best_seconds(call: Any, device: str) -> float:
    """Seconds per call of `call`, warm: the best of three timings of ten calls (a busy neighbour only slows some)."""
    for _ in range(3):
        call()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(10):
            call()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / 10)
    return best


def matmul_peak(model: Any, rows: int, device: str) -> float:
    """FLOP/s of this model's linear layers at `rows` tokens per step, weighted by their FLOPs (warm, best of three),
    each shape with the faster of torch's matmul and oneDNN's on a prepacked weight (where that runs)."""
    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shapes[tuple(module.weight.shape)] = shapes.get(tuple(module.weight.shape), 0) + 1
    dtype = next(model.parameters()).dtype
    flops = seconds = 0.0
    for (out_f, in_f), count in shapes.items():
        w = torch.randn(out_f, in_f, dtype=dtype, device=device)
        x = torch.randn(rows, in_f, dtype=dtype, device=device)
        kernels = [lambda x=x, w=w: x @ w.T]
        if can_prepack(device, dtype):
            packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
            kernels.append(lambda x=x, p=packed: torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], ""))
        seconds += min(best_seconds(kernel, device) for kernel in kernels) * count
        flops += 2 * rows * out_f * in_f * count
    return flops / seconds


def attention_seconds(model: Any, rows: int, context: int, device: str) -> float:
    """One decode step's attention for `rows` rows over `context` cached positions, all layers: the KV cache read
    that the FLOP roofline leaves out (grouped heads as transformers packs them for one query token; best of 3)."""
    config = model.config.get_text_config()
    kv, head_dim = kv_shape(config)
    heads = config.num_attention_heads
    dtype = next(model.parameters()).dtype
    q = torch.randn(rows, kv, heads // kv, head_dim, dtype=dtype, device=device)
    k, v = (torch.randn(rows, kv, context, head_dim, dtype=dtype, device=device) for _ in range(2))
    mask = torch.ones(rows, 1, 1, context, dtype=torch.bool, device=device)
    attend = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # noqa: E731
    with torch.inference_mode():
        return best_seconds(attend, device) * config.num_hidden_layers


def flop_per_token(model: Any, context: float) -> float:
    """Matmul FLOPs of one generated token: 2 x the linear weights, plus attention over `context` positions."""
    config = model.config.get_text_config()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * kv_shape(config)[1] * context
    return 2 * linear + attention


def profile(backend: Any, requests: list[GenerationRequest], rows: int = 20) -> None:
    """One emprobe run under torch's profiler: the operations taking the most host time, and device time on a GPU."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if backend.device == "cuda" else [])
    with profiler(activities=activities) as run:
        tokens, seconds = emprobe_side(backend, requests)
    print(f"\nprofiled emprobe run: {tokens} tokens in {seconds:.1f} s (slowed by the profiler)")
    averages = run.key_averages()
    for key in ["self_cpu_time_total"] + (["self_device_time_total"] if backend.device == "cuda" else []):
        print(averages.table(sort_by=key, row_limit=rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--suite", default="core")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", default="64")
    parser.add_argument("--naive-prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-hf", action="store_true", help="leave out model.generate (long workloads)")
    parser.add_argument("--skip-plain", action="store_true", help="leave out emprobe with torch's linear layers")
    parser.add_argument("--skip-unblocked", action="store_true",
                        help="leave out emprobe with attention over every column (no row blocks)")
    parser.add_argument("--skip-matmuls", action="store_true",
                        help="leave out emprobe without its one-pass kernel (CPU: two batched matmuls in float32, "
                        "torch's SDPA in bfloat16)")
    parser.add_argument("--skip-loops", action="store_true",
                        help="leave out emprobe with the one-pass kernel's numba loops instead of its vector code "
                        "(CPU with AVX-512)")
    parser.add_argument("--skip-own-prompts", action="store_true",
                        help="leave out emprobe with each row reading its own copy of its prompt (fused steps)")
    parser.add_argument("--skip-every-row", action="store_true",
                        help="leave out emprobe with fused steps computing finished rows too (CPU)")
    parser.add_argument("--skip-any-kernel", action="store_true",
                        help="leave out emprobe with torch's choice of attention kernels (on CUDA: cuDNN's too)")
    parser.add_argument("--skip-torch-norms", action="store_true",
                        help="leave out emprobe with transformers' RMSNorm instead of its compiled one (CPU; hence "
                        "with transformers' steps too)")
    parser.add_argument("--skip-transformers-steps", action="store_true",
                        help="leave out emprobe with transformers' forward pass at decode steps instead of its fused "
                        "step (CPU)")
    parser.add_argument("--skip-torch-draw", action="store_true",
                        help="leave out emprobe with its sampler's draw by torch's operations (CPU)")
    parser.add_argument("--lanes", type=int, default=0, help="also run emprobe as this many decode loops at once, "
                        "each with its share of the threads (CPU)")
    parser.add_argument("--profile", action="store_true", help="then profile one emprobe run (untimed)")
    args = parser.parse_args()
    requests = workload(args.suite, args.samples, args.limit, args.max_tokens)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    print(f"workload: {len(requests)} samples of {len({str(r.messages) for r in requests})} prompts, "
          f"{args.max_tokens} new tokens at most, T=1 top_p=1 top_k=0")
    for dtype in args.dtypes.split(","):
        backend = load_backend(args.model, batch_size=batch, dtype=dtype)
        rows = backend.batch_size
        plain = load_backend(args.model, batch_size=rows, dtype=dtype, prepack=False)  # torch's own nn.Linear
        compiled = backend.info["norms"] != "torch"
        norms = None if args.skip_torch_norms or not compiled else load_backend(
            args.model, batch_size=rows, dtype=dtype, compile_norms=False)  # transformers' RMSNorm
        print(f"\n== {backend.info['dtype']} on {backend.device}, {backend.info['threads']} threads, batch {rows}, "
              f"linear layers {backend.info['linear']}, attention {backend.info['attention']}, norms "
              f"{backend.info['norms']}, steps {backend.info['steps']}")
        rates: dict[str, list[tuple[int, float]]] = {"emprobe": [], "emprobe, torch linears": [],
                                                     "emprobe, unblocked": [], "emprobe, no one-pass": [],
                                                     "emprobe, loops": [], "emprobe, own prompts": [],
                                                     "emprobe, every row": [],
                                                     "emprobe, any kernel": [], "emprobe, torch norms": [],
                                                     "emprobe, transformers steps": [],
                                                     "emprobe, torch draw": [],
                                                     "emprobe, lanes": [], "generate, batched": []}
        for warm in (backend, norms):  # numba compiles (or loads) its kernels at their first call: not in a round
            if warm is not None:
                emprobe_side(warm, requests[:2])
        peaks = [matmul_peak(plain.model, rows, backend.device)]  # again after the rounds: the hardware's best wins
        for _ in range(args.rounds):
            rates["emprobe"].append(emprobe_side(backend, requests))
            if backend.blocked_attention and not args.skip_unblocked:
                rates["emprobe, unblocked"].append(side_with(backend, requests, backend, "blocked_attention", False))
            if _attention.onepass_for(backend.dtype, backend.device) and not args.skip_matmuls:
                rates["emprobe, no one-pass"].append(matmuls_side(backend, requests))
            if kernel("_onepass", "VECTORS") and _attention.onepass_for(backend.dtype, backend.device) \
                    and not args.skip_loops:  # the one-pass kernel's numba loops instead of its vector code
                rates["emprobe, loops"].append(side_with(backend, requests, _onepass(), "VECTORS", False))
            if backend.step is not None and not args.skip_own_prompts:
                rates["emprobe, own prompts"].append(side_with(backend, requests, _decode.ContinuousBatch,
                                                               "shared_prompts", own_copies))
            if backend.step is not None and not args.skip_every_row:
                rates["emprobe, every row"].append(side_with(backend, requests, _decode.ContinuousBatch, "__init__",
                                                             every_row(_decode.ContinuousBatch.__init__)))
            if backend.attention_kernels and not args.skip_any_kernel:
                rates["emprobe, any kernel"].append(side_with(backend, requests, backend, "attention_kernels", None))
            if norms is not None:
                rates["emprobe, torch norms"].append(emprobe_side(norms, requests))
            if backend.step is not None and not args.skip_transformers_steps:
                rates["emprobe, transformers steps"].append(side_with(backend, requests, backend, "step", None))
            if backend.device == "cpu" and _decode._compiled_draw() and not args.skip_torch_draw:
                rates["emprobe, torch draw"].append(side_with(backend, requests, _decode, "_compiled_draw",
                                                              lambda: None))  # the draw by torch's operations
            if args.lanes > 1 and backend.device == "cpu":
                rates["emprobe, lanes"].append(lanes_side(backend, requests, args.lanes))
            if not args.skip_plain:
                rates["emprobe, torch linears"].append(emprobe_side(plain, requests))
            if not args.skip_hf:
                rates["generate, batched"].append(hf_generate(plain, requests, rows))
        if args.naive_prompts and not args.skip_hf:
            step = max(1, len(requests) // args.naive_prompts)
            rates["generate per prompt"] = [hf_generate(plain, requests[::step][: args.naive_prompts], 1)]
        prompt_len = sum(len(backend.token_ids(backend.chat_text(r.messages))) for r in requests) / len(requests)
        tokens, seconds = rates["emprobe"][-1]
        context = prompt_len + tokens / len(requests) / 2
        peaks.append(matmul_peak(plain.model, rows, backend.device))
        peak = max(peaks)
        roofline = peak / flop_per_token(plain.model, context)
        attention = attention_seconds(plain.model, rows, round(context), backend.device)
        with_kv = 1 / (flop_per_token(plain.model, 0) / peak + attention / rows)
        print(f"matmul peak at {rows} rows: {peak / 1e9:.0f} GFLOP/s (before the rounds {peaks[0] / 1e9:.0f}, after "
              f"{peaks[1] / 1e9:.0f}); roofline {roofline:.0f} tok/s "
              f"(mean context {context:.0f} tokens)")
        print(f"attention over the mean context: {attention * 1e3:.1f} ms a step at {rows} rows; matmuls at their "
              f"peak plus that read: {with_kv:.0f} tok/s")
        base = None
        for side, runs in rates.items():
            if not runs:
                continue
            tok = sum(t for t, _ in runs)
            sec = sum(s for _, s in runs)
            rate = tok / sec
            base = base or rate
            print(f"{side:20s}: {tok // len(runs):7d} tokens {sec / len(runs):7.1f} s  {rate:7.1f} tok/s  "
                  f"{rate / roofline:6.1%} of roofline  emprobe/this {base / rate:5.2f}x")
        if args.profile:  # 32 tokens a sample: a trace of every step of a long run takes minutes to summarise
            profile(backend, workload(args.suite, args.samples, args.limit, 32))
        del backend, plain, norms


if __name__ == "__main__":
    main()
