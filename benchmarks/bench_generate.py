"""Generation throughput: one `model.generate` per prompt (as research scripts do) vs emprobe's backend.

Both run in this process on the same model, prompts and settings (sampling, temperature 1, 128 new tokens),
and both count the tokens they really generated. Usage:
    python benchmarks/bench_generate.py [--model smollm2-135m] [--prompts 64] [--naive-prompts 16]
        [--dtype auto] [--against-dtype float32]
`--naive-prompts` times the naive loop on N evenly spaced prompts only (it is slow); its rate is per token.
`--against-dtype` also times emprobe's path with the model in another dtype, alternating with the first (two
rounds each), and prints the ratio: what `auto` gains where it picks bfloat16.
"""

import argparse
import time

import torch

from emprobe.condition import PRESETS, Decoding
from emprobe.model import GenerationRequest, load_backend
from emprobe.plan import plan_samples
from emprobe.suite import load_suite


def prompts(n: int) -> list[GenerationRequest]:
    """n distinct chat prompts from the core suite, each under the `free` and `json` formats."""
    specs = plan_samples([load_suite("core")], [PRESETS["free"], PRESETS["json"]], "bench", samples=1)
    out = []
    for spec in specs:
        out.append(GenerationRequest(key=spec.gen_key, messages=spec.messages,
                                     decoding=Decoding(max_tokens=128, seed=spec.seed)))
        if len(out) == n:
            return out
    raise SystemExit(f"only {len(out)} prompts available")


def naive(backend, requests) -> tuple[int, float]:
    """One generate call per prompt, HF sampling, stop at EOS."""
    tok, model, tokens = backend.tokenizer, backend.model, 0
    start = time.perf_counter()
    for r in requests:
        ids = tok(backend.chat_text(r.messages), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=128, do_sample=True, temperature=1.0, top_p=1.0,
                                 pad_token_id=backend.pad_id, eos_token_id=backend.eos_ids)
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    return tokens, time.perf_counter() - start


def batched(backend, requests) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = sum(r.completion_tokens for r in backend.generate(requests))
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--naive-prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--against-dtype")
    args = parser.parse_args()
    backend = load_backend(args.model, batch_size=args.batch_size, dtype=args.dtype)
    requests = prompts(args.prompts)
    print(f"model {backend.identity}  dtype {backend.info['dtype']}  threads {torch.get_num_threads()}")
    step = max(1, len(requests) // args.naive_prompts)  # evenly spaced: both formats, short and long prompts
    n_tok, n_sec = naive(backend, requests[::step][: args.naive_prompts])
    b_tok, b_sec = batched(backend, requests)
    naive_rate, batch_rate = n_tok / n_sec, b_tok / b_sec
    print(f"naive   : {args.naive_prompts:3d} prompts {n_tok:6d} tokens {n_sec:7.1f} s  {naive_rate:7.1f} tok/s")
    print(f"emprobe : {args.prompts:3d} prompts {b_tok:6d} tokens {b_sec:7.1f} s  {batch_rate:7.1f} tok/s "
          f"(batch {args.batch_size})")
    print(f"ratio   : {batch_rate / naive_rate:.1f}x")
    if args.against_dtype:
        other = load_backend(args.model, batch_size=args.batch_size, dtype=args.against_dtype)
        rates: dict[str, list[float]] = {backend.info["dtype"]: [batch_rate], other.info["dtype"]: []}
        for b in (other, backend, other):
            tokens, seconds = batched(b, requests)
            rates[b.info["dtype"]].append(tokens / seconds)
        mean = {name: sum(r) / len(r) for name, r in rates.items()}
        for name, rate in mean.items():
            print(f"emprobe {name:9s}: {rate:7.1f} tok/s (mean of {len(rates[name])})")
        print(f"ratio   : {mean[backend.info['dtype']] / mean[other.info['dtype']]:.2f}x "
              f"{backend.info['dtype']} over {other.info['dtype']}")


if __name__ == "__main__":
    main()
