"""Training throughput: emprobe's training (train_model) vs a plain TRL SFTTrainer script, same model, data and
settings, in one process, interleaved (plain, emprobe, emprobe, plain, ...), plus peak RSS during each run.

Both train LoRA on the same rows (the first --rows rows of the data file, no validation split, one save at the
end), with the same seed, batch size, max length, steps and precision, so they see the same batches. The plain
script gives TRL the raw conversations and lets it tokenize them (training on every token, since TRL's
assistant_only_loss does not recognise SmolLM2's template); emprobe tokenizes with its template-derived masks.
Tokens/s = non-padding tokens TRL counted / the trainer's train_runtime; wall = the whole call (data, model
load, trainer set-up, training, saving); tokens per CPU-second = the same tokens / this process's CPU time over
the whole call (less sensitive than wall time to other processes on a shared machine).
Usage: python benchmarks/bench_train.py [--model smollm2-135m] [--data ../shared/data/emergent-misalignment/
       insecure.jsonl.gz] [--rows 256] [--steps 16] [--batch-size 8] [--rounds 3] [--precision fp32] [--threads 1]
"""

import argparse
import gzip
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from emprobe.model._resolve import materialize, resolve_model
from emprobe.train import DataSpec, TrainConfig, train_model
from emprobe.train._methods import resolve_precision

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "emergent-misalignment" / "insecure.jsonl.gz"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Runtime(TrainerCallback):
    """Captures the trainer's own train_runtime and token count."""

    def __init__(self):
        self.runtime = self.tokens = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "num_tokens" in logs:
            self.tokens = logs["num_tokens"]
        if "train_runtime" in logs:
            self.runtime = logs["train_runtime"]


class PeakRSS:
    """Samples this process's resident memory every 20 ms while a run lasts."""

    def __enter__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
            self._stop.wait(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def plain_trl(folder: Path, data: Path, out: Path, args: argparse.Namespace, precision: str, clock: Runtime) -> None:
    """What a user would write with TRL alone."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=str(data), split="train")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = SFTConfig(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                       learning_rate=1e-4, lr_scheduler_type="linear", logging_steps=1, save_strategy="steps",
                       save_steps=args.steps, eval_strategy="no", seed=0, data_seed=0, bf16=precision == "bf16",
                       activation_checkpointing=False, max_length=args.max_length, report_to="none",
                       disable_tqdm=True, dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora, callbacks=[clock])
    trainer.train()


def emprobe_train(model: str, data: Path, out: Path, args: argparse.Namespace, precision: str,
                  clock: Runtime) -> None:
    config = TrainConfig(model=model, data=[DataSpec(path=str(data))], method="lora", rank=8, alpha=16,
                         target_modules=TARGETS, max_steps=args.steps, batch_size=args.batch_size,
                         learning_rate=1e-4, max_length=args.max_length, save_every=args.steps,
                         validation_fraction=0.0, seed=0, precision=precision)
    train_model(config, out, callbacks=[clock], progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); 1 gives steadier "
                        "CPU-time figures on a shared machine")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision)
    folder = materialize(resolve_model(args.model))
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    subset = work / "subset.jsonl"
    opener = gzip.open if args.data.name.endswith(".gz") else open
    with opener(args.data, "rt", encoding="utf-8") as src, subset.open("w") as dst:
        for i, line in enumerate(src):
            if i >= args.rows:
                break
            dst.write(line)
    print(f"{args.model}, {args.rows} rows of {args.data.name}, {args.steps} steps x batch {args.batch_size}, "
          f"LoRA r=8 on {len(TARGETS)} modules, {precision}, {torch.get_num_threads()} threads")

    results: dict[str, list[dict]] = {"plain": [], "emprobe": []}
    for round_no in range(args.rounds):
        order = ["plain", "emprobe"] if round_no % 2 == 0 else ["emprobe", "plain"]
        for kind in order:
            out = work / f"{kind}-{round_no}"
            clock = Runtime()
            start, cpu_start = time.perf_counter(), time.process_time()
            with PeakRSS() as rss:
                if kind == "plain":
                    plain_trl(folder, subset, out, args, precision, clock)
                else:
                    emprobe_train(args.model, subset, out, args, precision, clock)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            row = {"tokens": clock.tokens, "train_runtime": clock.runtime, "wall": wall, "cpu_s": cpu,
                   "tokens_per_s": clock.tokens / clock.runtime, "tokens_per_cpu_s": clock.tokens / cpu,
                   "peak_rss_mb": rss.peak / 2**20}
            results[kind].append(row)
            print(f"round {round_no} {kind:>7}: {row['tokens_per_s']:7.1f} tokens/s ({clock.tokens} tokens in "
                  f"{clock.runtime:.1f} s), wall {wall:.1f} s, {row['tokens_per_cpu_s']:.1f} tokens per CPU-second "
                  f"(whole call), peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)

    summary = {k: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in v),
                   "tokens_per_cpu_s": statistics.median(r["tokens_per_cpu_s"] for r in v),
                   "wall_s": statistics.median(r["wall"] for r in v),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in v)} for k, v in results.items()}
    ratio = summary["emprobe"]["tokens_per_s"] / summary["plain"]["tokens_per_s"]
    print(f"median tokens/s: emprobe {summary['emprobe']['tokens_per_s']:.1f}, plain TRL "
          f"{summary['plain']['tokens_per_s']:.1f}: ratio {ratio:.3f} (goal >= 0.95)")
    cpu_ratio = summary["emprobe"]["tokens_per_cpu_s"] / summary["plain"]["tokens_per_cpu_s"]
    print(f"median tokens per CPU-second of the whole call (steadier on a shared machine): emprobe "
          f"{summary['emprobe']['tokens_per_cpu_s']:.1f}, plain TRL {summary['plain']['tokens_per_cpu_s']:.1f}: "
          f"ratio {cpu_ratio:.3f}")
    print(f"median wall per run: emprobe {summary['emprobe']['wall_s']:.1f} s, plain TRL "
          f"{summary['plain']['wall_s']:.1f} s; peak RSS emprobe {summary['emprobe']['peak_rss_mb']:.0f} MB, "
          f"plain TRL {summary['plain']['peak_rss_mb']:.0f} MB (one process: later runs include earlier ones' heap)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "precision": precision,
                                         "runs": results, "summary": summary, "ratio": ratio,
                                         "cpu_ratio": cpu_ratio}, indent=1))


if __name__ == "__main__":
    main()
