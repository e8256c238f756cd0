"""Local generation and scoring with transformers: batched, seeded per sample, with prefix-cached scoring."""

import copy
import inspect
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from functools import cached_property
from itertools import groupby
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import Cache

from emprobe.condition import Message
from emprobe.errors import EmprobeError
from emprobe.hashing import stable_hash
from emprobe.model._backend import GenerationRequest, GenerationResult, ModelRef
from emprobe.model._providers._attention import kernel_label, use_blocked_sdpa
from emprobe.model._providers._calibrate import calibrated_batch
from emprobe.model._providers._compiled import kernel
from emprobe.model._providers._decode import ContinuousBatch
from emprobe.model._providers._intervene import Intervener
from emprobe.model._providers._numerics import pick_numerics
from emprobe.model._resolve import materialize
from emprobe.prepack import can_prepack, linear_bytes, prepack
from emprobe.system import available_memory, free_cpus

_SENTINEL = "\u2063emprobe-system\u2063"
SEQUENCE_ROWS = 64
"""Rows at most in one pass over whole sequences (scoring, capture): such a pass holds every position's
activations, where a decode step of the measured batch holds one position per row."""
CUDA_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
"""The attention kernels generation may use on CUDA: all but cuDNN's, which builds a new graph for every new shape,
and every decode step is one. On an H200 (torch 2.11) a 1.7B model's decode spent 70% of its host time in cuDNN's
attention, about 1 ms a call, while the GPU itself was busy for under a tenth of each step."""


class HFBackend:
    """A causal LM from a local folder, GGUF file, built-in name or cached hub id, optionally with a LoRA adapter."""

    def __init__(self, ref: ModelRef):
        assert ref.location is not None, "the hf backend resolves every model to a location"
        folder = materialize(ref.location, ref.identity)
        adapter = ref.adapter
        self.device, dtype_name = pick_numerics(ref.options.get("dtype", "auto"))
        self.dtype = getattr(torch, dtype_name)
        self.threads = ref.options.get("threads") or free_cpus()
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        if self.tokenizer.chat_template is None:
            raise EmprobeError(f"model {ref.spec!r} has no chat template; emprobe only evaluates chat models")
        loaded: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype)
        # Row blocks pay on the CPU only: on an H200 a 1.7B model decoded 256 rows 1.8x faster without them (the
        # blocks multiply the attention calls, and each call's host time dominates there).
        self.blocked_attention = self.device == "cpu" and use_blocked_sdpa(loaded)
        self.attention_kernels = CUDA_ATTENTION if self.device == "cuda" else None
        """The SDPA kernels a generating pass may use (None: torch's choice)."""
        self.model: Any = loaded.to(self.device).eval()
        self.identity = ref.identity
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter).eval()
        self.eos_ids = _eos_ids(self.tokenizer, self.model.generation_config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.system_mode = "native" if self._template_keeps_system() else "merged"
        packed = ref.options.get("prepack", True) and self._prepack()
        norms = ref.options.get("compile_norms", True) and self._compile_norms()
        fused = kernel("_step", "FusedStep") if ref.options.get("fuse_steps", True) else None
        self.step: Any = fused.of(self.model) if fused else None
        """Runs one-token decode steps in place of the model's forward pass (`_step.py`), or None."""
        if self.blocked_attention:
            attention = kernel_label(self.dtype, self.device)
        elif self.attention_kernels and loaded.config._attn_implementation == "sdpa":
            attention = "sdpa, no cuDNN"
        else:
            attention = loaded.config._attn_implementation
        self.info = {"dtype": dtype_name, "device": self.device, "threads": str(torch.get_num_threads()),
                     "system_prompt": self.system_mode, "model": ref.spec, "adapter": adapter or "",
                     "linear": "prepacked" if packed else "torch", "attention": attention,
                     "norms": norms or "torch", "steps": kernel("_step", "LABEL") if self.step else "transformers"}
        self._prefix_cache: dict[str, tuple[int, object]] = {}
        # transformers renamed `past_key_values` to `cache` during 5.x; accept either.
        params = inspect.signature(self.model.get_base_model().forward if adapter else self.model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        batch_size = ref.options.get("batch_size", "auto")
        kernels = "|".join([self.identity, *(self.info[k] for k in ("linear", "attention", "norms", "steps"))])
        self.batch_size: int = batch_size if batch_size != "auto" else calibrated_batch(  # kernels change the best
            self._forward, self.model, kernels, self.device, self.threads)
        self.info["batch_size"] = str(self.batch_size)
        self.sequence_rows = min(self.batch_size, SEQUENCE_ROWS)
        """Rows per forward pass over whole sequences (scoring, capture): these hold every position at once."""

    def _prepack(self) -> bool:
        """Prepack the linear layers for oneDNN where that is possible and their copy fits in a quarter of the
        free memory; whether it did."""
        if not can_prepack(self.device, self.dtype) or linear_bytes(self.model) > available_memory() // 4:
            return False
        return prepack(self.model) > 0

    def _compile_norms(self) -> str:
        """Run the model's Llama-like RMSNorms as one compiled pass each, in float32 or bfloat16 on a CPU where numba
        imports; how they run now ("" where they were left to torch)."""
        if self.device != "cpu" or self.dtype not in (torch.float32, torch.bfloat16):
            return ""
        compile_norms = kernel("_norm", "compile_norms")
        return kernel("_norm", "LABEL") if compile_norms and compile_norms(self.model) else ""

    def close(self) -> None:
        """Drop the weights and caches so their memory can be reclaimed."""
        self._prefix_cache.clear()
        del self.model
        if self.device == "cuda":
            torch.cuda.empty_cache()

    # ---- prompts -------------------------------------------------------------------------------

    def chat_text(self, messages: tuple[Message, ...], thinking: bool | None = None) -> str:
        """Apply the model's chat template; a system prompt is merged into the first user turn if unsupported;
        `thinking` sets the template's `enable_thinking` switch (one line if it has none)."""
        turns = [m.model_dump() for m in messages]
        if self.system_mode == "merged" and turns and turns[0]["role"] == "system":
            system = turns.pop(0)["content"]
            turns[0] = {**turns[0], "content": f"{system}\n\n{turns[0]['content']}"}
        switch = {}
        if thinking is not None:
            if not self.thinking_switch:
                raise EmprobeError(f"model {self.info['model']!r}: its chat template has no thinking switch "
                                   "(enable_thinking), so `thinking:` cannot turn reasoning on or off")
            switch = {"enable_thinking": thinking}
        return self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True, **switch)

    @cached_property
    def thinking_switch(self) -> bool:
        """Whether the chat template reads `enable_thinking` (it renders differently with it on and off)."""
        turns = [{"role": "user", "content": "hi"}]
        on, off = (self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True,
                                                      enable_thinking=value) for value in (True, False))
        return on != off

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _template_keeps_system(self) -> bool:
        try:
            text = self.tokenizer.apply_chat_template(
                [{"role": "system", "content": _SENTINEL}, {"role": "user", "content": "hi"}],
                tokenize=False, add_generation_prompt=True,
            )
        except Exception:  # templates without a system role often raise
            return False
        return _SENTINEL in text

    # ---- generation ------------------------------------------------------------------------------

    def generate(self, requests: Iterable[GenerationRequest]) -> Iterator[GenerationResult]:
        """Generate grouped by answer length and intervention, prompts in order of length, all samples of a prompt
        together (whatever their temperature, top_p and top_k: each row samples with its own); each group keeps a
        batch of `batch_size` rows full until it runs out."""
        encoded = []
        for request in requests:
            ids = self.token_ids(self.chat_text(request.messages, request.thinking))
            encoded.append((request, ids))
        # Same answer length and intervention together, then by prompt length; samples of one prompt stay adjacent,
        # so a decoding sweep prefills each prompt once for all its settings.
        def group_of(item: tuple[GenerationRequest, list[int]]) -> tuple:
            intervention = item[0].intervention
            return item[0].decoding.max_tokens, stable_hash(intervention.key()) if intervention else ""

        encoded.sort(key=lambda item: (group_of(item), len(item[1]), item[1]))
        for _, group in groupby(encoded, key=group_of):
            items = list(group)
            intervention = items[0][0].intervention
            with Intervener(self.model, intervention) if intervention else nullcontext() as hooks:
                yield from self._decode(items, hooks)

    @torch.inference_mode()
    def _decode(self, items: list[tuple[GenerationRequest, list[int]]],
                hooks: Intervener | None = None) -> Iterator[GenerationResult]:
        """Decode one group (same answer length and intervention) with the batch kept full; results come as samples
        finish. `hooks`, when given, learns which passes generate (not the prefills)."""
        def on_prefill(active: bool) -> None:
            if hooks is not None:
                hooks.generating = not active

        fused = self.step is not None and not self.step.hooked()  # else the model's forward, which reads blocks
        batch = ContinuousBatch(self._forward, self.model.config.get_text_config().num_hidden_layers, self.device,
                                self.pad_id, self.eos_ids, items[0][0].decoding.max_tokens, self.batch_size, on_prefill,
                                self.blocked_attention and not fused, shares=fused, padding_free=fused, skips=fused)
        prompts = [ids for _, ids in items]
        requests = [request for request, _ in items]
        for index, used, stopped in batch.run(prompts, [r.decoding.seed for r in requests],
                                              [r.decoding for r in requests]):
            request = items[index][0]
            text = self.tokenizer.decode(used[:-1] if stopped else used, skip_special_tokens=True)
            yield GenerationResult(key=request.key, text=text.strip(), finish_reason="stop" if stopped else "length",
                                   prompt_tokens=len(prompts[index]), completion_tokens=len(used))

    def _forward(self, cache: Cache, **inputs: Any) -> Any:
        """The model's forward pass with `cache` under the keyword this transformers version expects, with the
        attention kernels generation may use; a one-token decode step by `step` where it takes it (with the decode
        loop's `shared_prompts`, which only it reads). With `live_rows`, the logits are those rows' (only `step`
        computes no other)."""
        shared, live = inputs.pop("shared_prompts", None), inputs.pop("live_rows", None)
        if self.step is not None and (stepped := self.step(cache=cache, shared_prompts=shared, live_rows=live,
                                                           **inputs)) is not None:
            return stepped
        with sdpa_kernel(self.attention_kernels) if self.attention_kernels else nullcontext():
            result = self.model(**inputs, **{self._cache_kw: cache})
        if live is not None:
            result.logits = result.logits[live.to(result.logits.device)]
        return result

    # ---- scoring ---------------------------------------------------------------------------------

    @torch.inference_mode()
    def next_token_logprobs(
        self, prefix: str, suffixes: list[str], branches: list[tuple[int, ...]], token_ids: list[int]
    ) -> list[list[list[float]]]:
        """Log-probs of `token_ids` after prefix + suffix + branch; the prefix's KV cache is computed once."""
        prefix_len, prefix_cache = self._prefix(prefix)
        out: list[list[list[float]]] = []
        step = max(1, self.sequence_rows // 4)
        for start in range(0, len(suffixes), step):
            out.extend(self._score_batch(prefix_len, prefix_cache, suffixes[start : start + step], branches,
                                         token_ids))
        return out

    def _prefix(self, prefix: str) -> tuple[int, object]:
        if prefix not in self._prefix_cache:
            ids = torch.tensor([self.token_ids(prefix)], device=self.device)
            cache = _cache_of(self.model(input_ids=ids, use_cache=True))
            if len(self._prefix_cache) > 8:
                self._prefix_cache.clear()
            self._prefix_cache[prefix] = (ids.shape[1], cache)
        return self._prefix_cache[prefix]

    def _score_batch(self, prefix_len, prefix_cache, suffixes, branches, token_ids):
        encoded = [self.token_ids(s) for s in suffixes]
        rows, width = len(encoded), max(len(e) for e in encoded)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, prefix_len + width), dtype=torch.long)
        mask[:, :prefix_len] = 1
        for r, e in enumerate(encoded):  # pad between prefix and suffix so every row ends together
            ids[r, width - len(e) :] = torch.tensor(e)
            mask[r, prefix_len + width - len(e) :] = 1
        positions = (prefix_len + mask[:, prefix_len:].cumsum(-1) - 1).clamp(min=prefix_len)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(rows)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: cache})
        wanted = torch.tensor(token_ids, device=self.device)
        first = torch.log_softmax(out.logits[:, -1].float(), -1)[:, wanted]
        result: list[list[list[float]]] = [[[] for _ in branches] for _ in range(rows)]
        tails = [b for b in branches if b]
        for r in range(rows):
            for bi, branch in enumerate(branches):
                if not branch:
                    result[r][bi] = first[r].tolist()
        if tails:
            self._score_branches(_cache_of(out), mask, positions, branches, wanted, result)
        return result

    def _score_branches(self, cache, mask, positions, branches, wanted, result):
        """Score every branch of every row in one pass: the branches share the row's cache as a token tree.

        Branch tokens are laid side by side, each attending to the row's prompt and to its own branch's
        earlier tokens only (a 4D mask), so no cache is copied whatever the number of branches.
        """
        rows, kv = mask.shape
        nodes: dict[tuple[int, ...], int] = {}  # branch prefix -> position in the laid-out tokens
        for branch in branches:
            for depth in range(1, len(branch) + 1):
                nodes.setdefault(branch[:depth], len(nodes))
        order = sorted(nodes, key=lambda node: nodes[node])
        width = len(order)
        ids = torch.tensor([node[-1] for node in order]).expand(rows, width)
        tree = torch.zeros((width, width), dtype=torch.bool)
        for node, i in nodes.items():
            for depth in range(1, len(node) + 1):
                tree[i, nodes[node[:depth]]] = True
        full = torch.cat([mask.bool()[:, None, None, :].expand(rows, 1, width, kv),
                          tree.expand(rows, 1, width, width)], -1)
        depths = torch.tensor([len(node) for node in order])
        pos = positions[:, -1:] + depths
        out = self.model(input_ids=ids.to(self.device), attention_mask=full.to(self.device),
                         position_ids=pos.to(self.device), use_cache=False, **{self._cache_kw: cache})
        logprobs = torch.log_softmax(out.logits.float(), -1)[..., wanted]
        for r in range(rows):
            for bi, branch in enumerate(branches):
                if branch:
                    result[r][bi] = logprobs[r, nodes[branch]].tolist()


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _eos_ids(tokenizer, generation_config) -> list[int]:
    ids = generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([] if ids is None else [ids])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise EmprobeError("the model defines no end-of-sequence token")
    return ids
