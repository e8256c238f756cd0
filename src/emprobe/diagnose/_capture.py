"""Activation capture: the residual stream after chosen decoder layers, pooled per answer, streamed to `.npy`
files beside the store (memory-flat: rows are written into memory-mapped arrays batch by batch)."""

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emprobe.diagnose._forward import Encoded, by_length, encode, padded
from emprobe.errors import EmprobeError
from emprobe.hashing import file_sha256, stable_hash
from emprobe.model._providers._intervene import decoder_layers  # the blocks steering hooks too
from emprobe.store import ActivationArray, Store


def parse_layers(text: str, count: int) -> list[int]:
    """`8,16` or `all` as layer numbers 1..count (layer N = the residual stream after N decoder blocks)."""
    if text.strip() == "all":
        return list(range(1, count + 1))
    try:
        layers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise EmprobeError(f"--layers {text!r}: give layer numbers like 8,16, or all") from None
    bad = [n for n in layers if not 1 <= n <= count]
    if bad or not layers:
        raise EmprobeError(f"--layers {text!r}: this model has layers 1..{count}")
    return layers


def pooling_weights(batch: Sequence[Encoded], position: str, width: int) -> torch.Tensor:
    """Rows x tokens weights that pool a layer's output into one vector per row (each row sums to 1)."""
    weights = torch.zeros((len(batch), width))
    for row, e in enumerate(batch):
        if position == "answer-mean" and e.answer_len:
            weights[row, e.prompt_len : len(e.ids)] = 1 / e.answer_len
        elif position == "prompt-mean":
            weights[row, : e.prompt_len] = 1 / e.prompt_len
        else:  # last token (an empty answer's mean falls back to it too)
            weights[row, len(e.ids) - 1] = 1.0
    return weights


class _Done(Exception):
    """Raised by the deepest hook: the layers after it are not needed."""


class LayerCapture:
    """Forward hooks on decoder blocks that keep each block's pooled output; the forward pass stops after the
    deepest one (blocks may return a tensor, as transformers 5 does, or a tuple whose first item is it)."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[int]):
        self.model, self.layers = model, list(layers)
        self.site, self.blocks = decoder_layers(model)
        self.weights = torch.zeros(0)
        self.pooled: dict[int, torch.Tensor] = {}

    def hook_name(self, layer: int) -> str:
        return f"{self.site}.{layer - 1}"

    def _hook(self, layer: int) -> Callable[..., None]:
        deepest = layer == max(self.layers)

        def keep(module: torch.nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            self.pooled[layer] = torch.einsum("btd,bt->bd", hidden.float(), self.weights)
            if deepest:
                raise _Done

        return keep

    @torch.inference_mode()
    def run(self, ids: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> dict[int, torch.Tensor]:
        """Layer -> rows x width pooled outputs of one batch."""
        self.weights, self.pooled = weights.to(ids.device), {}
        handles = [self.blocks[n - 1].register_forward_hook(self._hook(n)) for n in self.layers]
        try:
            self.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
        except _Done:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return self.pooled


def arrays_dir(store: Path) -> Path:
    """Where a store's arrays live: a folder beside it named after it."""
    return store.parent / f"{store.stem}-arrays"


def capture_run(db: Store, run_id: str, backend: Any, layers: Sequence[int], position: str,
                progress: Callable[[int], None] = lambda n: None) -> list[ActivationArray]:
    """Capture the run's answered samples at `layers`, write one `.npy` per layer, record them in the store."""
    total = db.count_answered(run_id)
    if total == 0:
        raise EmprobeError(f"run {run_id} has no answers to capture activations from")
    capture = LayerCapture(backend.model, layers)
    width = backend.model.config.get_text_config().hidden_size
    folder = arrays_dir(db.path) / run_id / stable_hash(backend.identity, position, length=12)
    tmp = folder / f".capture-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        out = {n: np.lib.format.open_memmap(tmp / f"layer-{n}.npy", mode="w+", dtype=np.float32, shape=(total, width))
               for n in layers}
        sample_ids: list[str] = []
        for chunk in db.answered(run_id):
            if len(sample_ids) + len(chunk) > total:
                raise EmprobeError(f"run {run_id} gained answers during the capture; capture it again")
            encoded = [encode(backend, s.messages, s.answer, s.thinking) for s in chunk]
            start = len(sample_ids)
            sample_ids.extend(s.sample_id for s in chunk)
            for rows in by_length(encoded, backend.sequence_rows):
                batch = [encoded[i] for i in rows]
                ids, mask = padded(batch, backend.pad_id, backend.device)
                pooled = capture.run(ids, mask, pooling_weights(batch, position, ids.shape[1]))
                where = np.asarray(rows) + start
                for n in layers:
                    out[n][where] = pooled[n].cpu().numpy()
                progress(len(rows))
        for array in out.values():
            array.flush()
        del out
        samples = tmp / "samples.json"
        samples.write_text(json.dumps(sample_ids))
        samples_sha = file_sha256(samples)
        # Content-addressed row ids, so layers captured earlier (with other rows) keep theirs.
        samples_name = f"samples-{samples_sha[:16]}.json"
        hashes = {n: file_sha256(tmp / f"layer-{n}.npy") for n in layers}
        os.replace(samples, folder / samples_name)
        for n in layers:
            os.replace(tmp / f"layer-{n}.npy", folder / f"layer-{n}.npy")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    relative = folder.relative_to(db.path.parent)
    arrays = [ActivationArray(run_id=run_id, model=backend.identity, position=position, layer=n,
                              hook=capture.hook_name(n), path=str(relative / f"layer-{n}.npy"), sha256=hashes[n],
                              samples_path=str(relative / samples_name), samples_sha256=samples_sha,
                              rows=len(sample_ids), width=width) for n in layers]
    db.save_activations(arrays)
    return arrays


def load_array(store: Path, array: ActivationArray) -> tuple[list[str], np.ndarray]:
    """(sample ids, rows x width memory map) of a captured layer, after checking both files' sha256."""
    base = store.parent
    for path, expected in ((array.path, array.sha256), (array.samples_path, array.samples_sha256)):
        if not (base / path).is_file() or file_sha256(base / path) != expected:
            raise EmprobeError(f"{base / path}: missing or changed since it was captured (sha256 differs); "
                               f"capture again with `emprobe activations {array.run_id}`")
    ids = json.loads((base / array.samples_path).read_text())
    return ids, np.load(base / array.path, mmap_mode="r")
