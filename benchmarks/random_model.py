"""A model folder with another model's tokenizer, chat template and architecture, its sizes optionally changed, and
random weights: for throughput benchmarks where real weights cannot travel (a GPU machine with no network).

With random weights an end-of-sequence token is rare, so every sample runs to its token limit; the texts mean
nothing. Usage:
    python benchmarks/random_model.py SOURCE OUT [--set KEY=VALUE ...] [--dtype bfloat16] [--device cuda]
SOURCE is anything `--model` names (the default model's folder is its converted GGUF) or a folder holding only a
`config.json` and tokenizer files. A model of SmolLM2-1.7B's published shape, with the 135M's tokenizer:
    --set hidden_size=2048 intermediate_size=8192 num_hidden_layers=24 num_attention_heads=32 num_key_value_heads=32
"""

import argparse
import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from emprobe.errors import EmprobeError
from emprobe.model._resolve import materialize, resolve_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config values (JSON) to change")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--device", default="cpu", help="where to draw the weights (a GPU draws billions quickly)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        found = resolve_model(args.source)
    except EmprobeError as err:
        raise SystemExit(str(err)) from None
    folder = materialize(found.path, found.identity)
    config = AutoConfig.from_pretrained(folder)
    for item in args.set:
        key, _, value = item.partition("=")
        if not hasattr(config, key):
            raise SystemExit(f"--set {item}: {folder / 'config.json'} has no {key!r}")
        try:
            setattr(config, key, json.loads(value))
        except ValueError:
            raise SystemExit(f"--set {item}: {value!r} is not a JSON value (a string is written \"...\")") from None
    torch.manual_seed(args.seed)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
    model.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(folder).save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.out}: {config.model_type}, {params / 1e6:.0f}M parameters, random ({args.dtype}, seed {args.seed})")


if __name__ == "__main__":
    main()
