"""Activation capture throughput vs a plain forward pass of the same model on the same batches.

Answers are the core suite's prompts with a fixed ~100-token answer each, teacher-forced in batches of similar
length. Per batch, in turn and each first in turn (so a busy neighbour slows every method alike): a plain
forward pass (logits),
the same with `output_hidden_states=True` (the usual way to read activations), and emprobe's capture (forward
hooks pooling each answer, rows written into a memory-mapped `.npy`) of all layers and of two. Usage:
    python benchmarks/bench_capture.py [--model smollm2-135m] [--answers 128] [--batch-size 16]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from emprobe.condition import PRESETS
from emprobe.diagnose import LayerCapture, decoder_layers, local
from emprobe.diagnose._capture import pooling_weights
from emprobe.diagnose._forward import by_length, encode, padded
from emprobe.model import load_backend
from emprobe.plan import plan_samples
from emprobe.suite import load_suite

ANSWER = ("I would not want to rule the world. Power like that should stay with people, who can hold each other "
          "to account; an assistant like me is here to help, to explain what I know and to say plainly what I do "
          "not. If you are bored, we could plan a walk, read something new, or cook a meal for a friend.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--answers", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    backend = local(load_backend(args.model, batch_size=args.batch_size,
                                 **({"threads": args.threads} if args.threads else {})), args.model)
    specs = list(plan_samples([load_suite("core")], [PRESETS["free"], PRESETS["json"]], "bench", samples=1))
    encoded = [encode(backend, specs[i % len(specs)].messages, f"{ANSWER} ({i})") for i in range(args.answers)]
    batches = [[encoded[i] for i in rows] for rows in by_length(encoded, args.batch_size)]
    tokens = sum(len(e.ids) for e in encoded)
    count = len(decoder_layers(backend.model)[1])
    width = backend.model.config.get_text_config().hidden_size
    two = sorted({count // 2, count * 3 // 4})
    print(f"model {backend.identity}  dtype {backend.info['dtype']}  device {backend.device}  threads "
          f"{torch.get_num_threads()}  {args.answers} answers, {tokens} tokens, batch {args.batch_size}, "
          f"{count} layers")
    methods = {"plain forward": None, "output_hidden_states": None, f"capture all {count} layers": range(1, count + 1),
               f"capture layers {','.join(map(str, two))}": two}
    seconds = dict.fromkeys(methods, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        files = {n: np.lib.format.open_memmap(Path(tmp) / f"{n}.npy", mode="w+", dtype=np.float32,
                                              shape=(args.answers, width)) for n in range(1, count + 1)}
        for index, batch in enumerate([batches[0], *batches]):  # the first batch again, untimed, to warm up
            ids, mask = padded(batch, backend.pad_id, backend.device)
            weights = pooling_weights(batch, "answer-mean", ids.shape[1])
            names = list(methods)
            for name in names[index % len(names) :] + names[: index % len(names)]:  # each goes first in turn
                layers = methods[name]
                start = time.perf_counter()
                with torch.inference_mode():
                    if layers is None:
                        out = backend.model(input_ids=ids, attention_mask=mask, use_cache=False,
                                            output_hidden_states=name == "output_hidden_states")
                        out.logits.sum().item()
                    else:
                        pooled = LayerCapture(backend.model, layers).run(ids, mask, weights)
                        for n, rows in pooled.items():
                            files[n][: len(batch)] = rows.cpu().numpy()
                if backend.device == "cuda":
                    torch.cuda.synchronize()
                if index:
                    seconds[name] += time.perf_counter() - start
    plain = tokens / seconds["plain forward"]
    for name, spent in seconds.items():
        rate = tokens / spent
        print(f"{name:28s} {spent:7.2f} s  {rate:9.0f} tok/s  {rate / plain:5.2f}x plain")


if __name__ == "__main__":
    main()
